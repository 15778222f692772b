//! `gatewayctl`: operate the gateway from a terminal.
//!
//!   gatewayctl validate FILE      check a config (JSON or YAML); every issue with its path
//!   gatewayctl render FILE        print the KV entries for it, as `wrangler kv bulk put` takes

use std::process::ExitCode;

use edge_gateway::gateway::config::{Config, ACTIVE_KEY};
use serde_json::{json, Value};

const USAGE: &str = "usage: gatewayctl validate FILE | gatewayctl render FILE";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["validate", file] => validate(file),
        ["render", file] => render(file),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a config file as a JSON value; YAML when the name says so.
fn load(file: &str) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?;
    if file.ends_with(".yaml") || file.ends_with(".yml") {
        serde_yaml::from_str(&text).map_err(|e| format!("{file}: invalid YAML: {e}"))
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{file}: invalid JSON: {e}"))
    }
}

fn check(file: &str) -> Result<(Value, Config), String> {
    let value = load(file)?;
    match Config::from_value(value.clone()) {
        Ok(config) => Ok((value, config)),
        Err(issues) => {
            let lines: Vec<String> = issues.iter().map(|i| format!("  {i}")).collect();
            Err(format!("{file}: {} issue(s)\n{}", issues.len(), lines.join("\n")))
        }
    }
}

fn validate(file: &str) -> Result<(), String> {
    let (_, config) = check(file)?;
    println!("{file}: ok ({} endpoint(s): {})", config.order.len(), config.order.join(", "));
    Ok(())
}

fn render(file: &str) -> Result<(), String> {
    let (value, _) = check(file)?;
    let entries = json!([{ "key": ACTIVE_KEY, "value": value.to_string() }]);
    println!("{}", serde_json::to_string_pretty(&entries).expect("JSON value serializes"));
    Ok(())
}
