//! The slowest requests: native CPU time of the hand-made adversarial corpus and of the
//! slowest inputs the fuzzer finds (`edge_gateway::fuzz`), through the whole pipeline with
//! in-memory ports (route, config, auth, limits, guardrails, templates, translation, the
//! origin's answer read and translated, the after-response work). Prints numbers; asserts
//! nothing. The target (issue 12): at most 2 ms for any request under the body limit (1 MiB).
//! An origin answer over the limit (a long stream) is outside it: its cost is printed per MiB.
//!
//! `cargo bench --features cli --bench slowest [-- --fuzz-cases N --seed S --runs N --only TEXT --case N]`
//! (scripts/bench runs it). CPU time is the thread's (`CLOCK_THREAD_CPUTIME_ID`), the least of
//! `--runs` (5) runs after a warm-up, so other load on a shared machine inflates it least; the
//! fuzz harness's own invariant checks after each request are not counted.

use edge_gateway::fuzz::{adversarial, case, Case, Harness, OriginPlan};

/// The request body limit (1 MiB): the bound is for inputs under it.
const BODY_LIMIT: usize = 1 << 20;

/// The bytes the case's origin answers with, when it answers with given bytes.
fn origin_bytes(case: &Case) -> usize {
    match &case.origin {
        OriginPlan::Raw { body, .. } => body.len(),
        _ => 0,
    }
}

/// Least CPU time of `runs` runs of `case` (after one warm-up run) through the pipeline (the
/// harness's own checks after each request are not counted), and its status.
fn time(harness: &Harness, case: &Case, runs: usize) -> (u64, u16) {
    let status = harness.run(case).map(|r| r.status).unwrap_or(0);
    let samples: Vec<u64> = (0..runs).map(|_| harness.run(case).map_or(0, |r| r.cpu_ns)).collect();
    (samples.into_iter().min().unwrap_or(0), status)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let flag = |name: &str| {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<u64>().ok())
    };
    // As many cases as the README's seeded fuzz run: a 20,000-case scan missed the slowest
    // (streams to Anthropic clients and Gemini endpoints, past case 20,000).
    let fuzz_cases = flag("--fuzz-cases").unwrap_or(100_000);
    let seed = flag("--seed").unwrap_or(1);
    // `--only <text>`: just the corpus entries whose name contains it (for profiling), no fuzzing.
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let fuzz_cases = if only.is_some() { 0 } else { fuzz_cases };
    // `--case <n>`: just that fuzz case (for profiling).
    let single = flag("--case");
    let runs = flag("--runs").unwrap_or(5) as usize;
    let harness = Harness::new();

    println!("Slowest requests, native CPU time per request (least of {runs} after a warm-up)");
    println!("hand-made adversarial corpus:");
    let mut worst: (u64, String) = (0, String::new());
    for (name, c) in adversarial() {
        if single.is_some() || only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let (ns, status) = time(&harness, &c, runs);
        println!("  {:>9.3} ms  HTTP {status}  {:>8} B  {name}", ns as f64 / 1e6, c.body.len());
        // An origin answer over the body limit (a long stream) is outside the bound; its cost
        // is reported per MiB of answer instead.
        let answer = origin_bytes(&c);
        if answer > BODY_LIMIT {
            let per_mib = ns as f64 / 1e6 / (answer as f64 / BODY_LIMIT as f64);
            println!(
                "               (an origin answer of {answer} B, over the body limit: {per_mib:.3} ms per MiB of it)"
            );
        } else if ns > worst.0 {
            worst = (ns, format!("corpus: {name}"));
        }
    }

    // The fuzzer's cases, timed once each; the slowest 40 re-timed properly (a single timing
    // can spike: with ten, cases of 0.02 ms crowded out slow ones).
    let scan = Harness::new();
    let mut timed: Vec<(u64, u64)> = single.map(|i| vec![(0, i)]).unwrap_or_default();
    for index in (0..fuzz_cases).filter(|i| single.is_none() && i % 10 != 9) {
        let c = case(seed, index, &scan.keys);
        timed.push((scan.run(&c).map_or(0, |r| r.cpu_ns), index));
    }
    timed.sort_unstable_by(|a, b| b.cmp(a));
    println!("slowest of {fuzz_cases} fuzzer cases (seed {seed}), re-timed:");
    for (_, index) in timed.iter().take(40) {
        let c = case(seed, *index, &harness.keys);
        let (ns, status) = time(&harness, &c, runs);
        let what = format!("{} {}", c.method, c.path.chars().take(50).collect::<String>());
        let answer = origin_bytes(&c);
        println!(
            "  {:>9.3} ms  HTTP {status}  {:>8} B  #{index} {what}{}",
            ns as f64 / 1e6,
            c.body.len(),
            if answer > 0 { format!(" (origin answer {answer} B)") } else { String::new() }
        );
        if ns > worst.0 && answer <= BODY_LIMIT {
            worst = (ns, format!("fuzz case #{index} (seed {seed}): {what}"));
        }
    }
    println!("slowest request with every input under the body limit: {:.3} ms ({})", worst.0 as f64 / 1e6, worst.1);
}
