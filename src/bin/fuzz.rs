//! The pipeline fuzzer (see `edge_gateway::fuzz`): a deterministic seeded run.
//!
//! ```text
//! fuzz [--seed S] [--cases N] [--only I] [--quiet]
//! ```
//! Exits non-zero when any case panicked, answered a 5xx other than an origin failure or a
//! documented 503, broke the error shape or leaked a secret. `scripts/test` runs 100k cases;
//! `scripts/fuzz` runs longer ones with fresh seeds.

use std::process::ExitCode;
use std::time::Instant;

use edge_gateway::fuzz::{case, check_config, config_case, Harness};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
    };
    let seed = flag("--seed").unwrap_or(1);
    let cases = flag("--cases").unwrap_or(100_000);
    let only = flag("--only");
    let quiet = args.iter().any(|a| a == "--quiet");
    if std::env::var_os("FUZZ_PANICS").is_none() {
        std::panic::set_hook(Box::new(|_| {})); // panics are reported per case below
    }

    let started = Instant::now();
    let mut harness = Harness::new();
    let mut failures = Vec::new();
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let mut slowest: Vec<(u64, u64, String)> = Vec::new(); // (CPU ns, case, what)
    let (mut requests, mut configs) = (0u64, 0u64);
    let range: Box<dyn Iterator<Item = u64>> = match only {
        Some(i) => Box::new(std::iter::once(i)),
        None => Box::new(0..cases),
    };
    for index in range {
        if index % 10 == 9 {
            configs += 1;
            if let Err(e) = check_config(config_case(seed, index)) {
                failures.push((index, e));
            }
            continue;
        }
        if index % 5_000 == 0 && index > 0 {
            // A fresh isolate now and then: memos, limiter and usage book start over.
            harness = Harness::new();
        }
        let c = case(seed, index, &harness.keys);
        requests += 1;
        if only.is_some() {
            println!(
                "case {index}: {} {} headers {:?}\n  body ({} bytes): {}\n  origin: {}\n  chunk {} leave_after {:?} kv_fail {:?}",
                c.method,
                c.path,
                c.headers,
                c.body.len(),
                String::from_utf8_lossy(&c.body).chars().take(400).collect::<String>(),
                format!("{:?}", c.origin).chars().take(400).collect::<String>(),
                c.chunk,
                c.leave_after,
                c.kv_fail
            );
        }
        match harness.run(&c) {
            Ok(r) => {
                *statuses.entry(r.status).or_default() += 1;
                if slowest.len() < 10 || r.cpu_ns > slowest[slowest.len() - 1].0 {
                    let what = format!(
                        "{} {} ({} bytes in, {} out)",
                        c.method,
                        c.path.chars().take(60).collect::<String>(),
                        c.body.len(),
                        r.answer_bytes
                    );
                    slowest.push((r.cpu_ns, index, what));
                    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
                    slowest.truncate(10);
                }
            }
            Err(e) => {
                if !quiet {
                    eprintln!("case {index} (seed {seed}): {e}");
                }
                failures.push((index, e));
            }
        }
    }
    // A run in which nothing got through tests only the refusals: a broken harness, not a pass.
    if only.is_none() && requests > 1_000 && statuses.get(&200).copied().unwrap_or(0) * 50 < requests {
        failures.push((u64::MAX, "fewer than 2% of the requests were answered 200".to_string()));
    }
    let elapsed = started.elapsed();
    println!(
        "fuzz: seed {seed}: {} cases ({requests} requests, {configs} configs) in {:.1} s: {} failures",
        requests + configs,
        elapsed.as_secs_f64(),
        failures.len()
    );
    let by_status: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!("  statuses: {}", by_status.join(", "));
    println!("  slowest cases (native CPU, the in-memory origin's excluded; `--only I` reruns one):");
    for (ns, i, what) in &slowest {
        println!("    {:>9.3} ms  #{i}  {what}", *ns as f64 / 1e6);
    }
    for (i, e) in failures.iter().take(20) {
        println!("  FAILED case {i}: {}", e.chars().take(300).collect::<String>());
    }
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
