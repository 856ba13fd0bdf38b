//! Scale benchmark (issue 16): N hosts as network namespaces, each with a
//! real agent (embedded store, cluster port, API) and the recording
//! datapath (`--datapath record`, which plumbs nothing and logs every
//! change: real kernel devices for 100 hosts would not fit). Measures:
//! cold start (all agents started at once, fresh), attach
//! acknowledgement to applied on every host (steady rate, then bursts),
//! agent RSS/CPU idle and under churn, store size on disk, full restart
//! to converged, and a new host joining to converged.
//!
//! usage: bench_scale SOCKETPLANE_BIN [HOSTS] [ENDPOINTS] [RATE/s] [PHASES]
//! (as root; see bench/scale.sh). PHASES: comma-separated of
//! cold,attach,restart,join (default all).

#[path = "../tests/scale_harness/mod.rs"]
mod scale_harness;

use std::collections::HashSet;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use scale_harness::{Percentiles, Scale};

fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args
        .next()
        .expect("usage: bench_scale SOCKETPLANE_BIN [HOSTS] [ENDPOINTS] [RATE] [PHASES]");
    let hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let endpoints: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100.0);
    let phases = args
        .next()
        .unwrap_or_else(|| "cold,attach,restart,join".into());
    let on = |p: &str| phases.split(',').any(|x| x == p);
    let name = format!("bs{:04x}", std::process::id() % 0xffff);
    down_on_signal(name.clone());
    let long = Duration::from_secs(600);

    let t0 = Instant::now();
    let mut s = Scale::up(&name, hosts, std::path::Path::new(&bin), &[]);
    let formed = s.wait_members(0, hosts, long);
    println!(
        "lab up ({hosts} hosts, host1 first, then the rest at once): {:.1} s, all members {:.1} s later",
        t0.elapsed().as_secs_f64() - formed.as_secs_f64(),
        formed.as_secs_f64()
    );
    let idle = s.usage(Duration::from_secs(10));
    println!(
        "idle, no endpoints: RSS mean {:.1} MiB max {:.1} MiB (anonymous {:.1} / {:.1}); CPU mean {:.2}% max {:.2}% of a core",
        idle.rss_mib_mean, idle.rss_mib_max, idle.anon_mib_mean, idle.anon_mib_max, idle.cpu_pct_mean, idle.cpu_pct_max
    );

    if on("cold") {
        let cold = s.cold_start(long);
        println!(
            "cold start: {hosts} fresh agents started at once, all members: {:.1} s",
            cold.as_secs_f64()
        );
    }
    if !(on("attach") || on("restart") || on("join")) {
        return;
    }

    s.create_network("scale", "10.64.0.0/14");
    // Steady: `rate` attaches per second for about 40 s, spread over the
    // hosts; then the rest in bursts.
    let half = ((rate * 40.0) as usize).clamp(1, endpoints / 2);
    let tc = Instant::now();
    let steady = s.attach("scale", half, 32, Some(rate), 0);
    let attach_secs = tc.elapsed().as_secs_f64();
    let mut all: HashSet<String> = steady.iter().map(|e| e.id.clone()).collect();
    s.wait_exactly(&all, long);
    println!(
        "steady attaches ({half} at {rate}/s, took {attach_secs:.1} s): ack to applied on all {hosts} hosts: {}",
        s.attach_to_applied(&steady)
    );
    println!(
        "  attach call (API request to 201): {}",
        Percentiles::of(steady.iter().map(|e| e.call).collect())
    );
    // Bursts: as fast as 64 clients go, measuring the agents meanwhile.
    let burst_n = endpoints - half;
    let tb = Instant::now();
    let bursts = std::thread::scope(|scope| {
        let usage = scope.spawn(|| s.usage(Duration::from_secs(10)));
        let b = s.attach("scale", burst_n, 64, None, half);
        (b, usage.join().expect("usage"))
    });
    let burst_secs = tb.elapsed().as_secs_f64();
    let (burst, churn) = bursts;
    all.extend(burst.iter().map(|e| e.id.clone()));
    s.wait_exactly(&all, long);
    println!(
        "burst attaches ({burst_n}, 64 in flight, took {burst_secs:.1} s): ack to applied on all {hosts} hosts: {}",
        s.attach_to_applied(&burst)
    );
    println!(
        "  attach call (API request to 201): {}",
        Percentiles::of(burst.iter().map(|e| e.call).collect())
    );
    println!(
        "under churn: RSS mean {:.1} MiB max {:.1} MiB (anonymous {:.1} / {:.1}); CPU mean {:.1}% max {:.1}% of a core",
        churn.rss_mib_mean, churn.rss_mib_max, churn.anon_mib_mean, churn.anon_mib_max, churn.cpu_pct_mean, churn.cpu_pct_max
    );
    let idle = s.usage(Duration::from_secs(10));
    println!(
        "idle, {} endpoints: RSS mean {:.1} MiB max {:.1} MiB (anonymous {:.1} / {:.1}); CPU mean {:.2}% max {:.2}% of a core",
        all.len(),
        idle.rss_mib_mean,
        idle.rss_mib_max,
        idle.anon_mib_mean,
        idle.anon_mib_max,
        idle.cpu_pct_mean,
        idle.cpu_pct_max
    );
    let sizes = s.store_sizes();
    println!(
        "store on disk: largest {:.1} MiB, median {:.1} MiB",
        sizes.first().copied().unwrap_or(0) as f64 / 1048576.0,
        sizes.get(sizes.len() / 2).copied().unwrap_or(0) as f64 / 1048576.0
    );

    if on("restart") {
        s.stop_all();
        s.reset_logs();
        let t = Instant::now();
        s.start_all(false);
        s.wait_exactly(&all, long);
        println!(
            "full restart of {hosts} agents: all converged with {} endpoints in {:.1} s",
            all.len(),
            t.elapsed().as_secs_f64()
        );
    }
    if on("join") {
        let t = s.add_host_and_converge(&all, long);
        println!(
            "new host joins and converges with {} endpoints: {:.1} s",
            all.len(),
            t.as_secs_f64()
        );
    }
}

/// The signal that interrupted the run, if one did.
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(signal: libc::c_int) {
    INTERRUPTED.store(signal, Ordering::SeqCst);
}

/// Ctrl-C, or the TERM of a timeout, would end the run without the lab's
/// clean-up (`Drop` does not run): note either in a handler, and on a
/// thread of its own remove the lab (agents, namespaces, state) and exit.
/// A handler, not a blocked signal and `sigwait`: the mask would be
/// inherited by the agents, which then could not be stopped.
fn down_on_signal(name: String) {
    let handler = note_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic (async-signal-safe);
    // glibc's signal() restarts interrupted system calls.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let signal = INTERRUPTED.load(Ordering::SeqCst);
        if signal == 0 {
            continue;
        }
        if std::env::var_os("SCALE_KEEP").is_none() {
            eprintln!("interrupted: removing lab {name}");
            // Twice: the main thread may start an agent meanwhile.
            for _ in 0..2 {
                let dir = scale_harness::state_dir(&name);
                if let Err(e) = socketplane_lab::Lab::purge(&name, &dir) {
                    eprintln!("lab purge: {e}");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        std::process::exit(128 + signal);
    });
}
