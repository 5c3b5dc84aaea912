//! CPU time per Argon2id verification (m = 19 MiB, t = 2, p = 1), side by side:
//!
//! - `cxauth`: cxauth's own path (`password::verify_with_memory`, `argon2-rust`, memory reused),
//! - `rustcrypto`: what cxauth ran before, RustCrypto `argon2` 0.6 with reused memory,
//! - `node-rs`: `@node-rs/argon2` in node, when `--node-rs DIR` names a directory whose
//!   `node_modules` has it (`cd /tmp/x && npm install @node-rs/argon2`); run by
//!   `examples/argon2_node_rs.mjs`.
//!
//! Rounds are interleaved so machine load hits each side alike. CPU is this thread's time on CPU
//! (`/proc/thread-self/schedstat`, ns) for `cxauth` and `rustcrypto`, and `process.cpuUsage()`
//! for node. Run: `cargo run --release -p cxauth-core --example argon2_cpu -- [rounds] [count]
//! [--node-rs DIR]`.

use anyhow::Context as _;
use cxauth_core::password::{HashMemory, hash_password, verify_with_memory};
use secrecy::SecretString;

/// This thread's CPU time so far, in ns (Linux).
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    s.split_whitespace()
        .next()
        .context("empty schedstat")?
        .parse()
        .context("schedstat")
}

/// Mean CPU ms per call of `f` over `count` calls.
fn cpu_ms_per(count: usize, mut f: impl FnMut() -> bool) -> anyhow::Result<f64> {
    let start = thread_cpu_ns()?;
    for _ in 0..count {
        anyhow::ensure!(f(), "a verification failed");
    }
    Ok((thread_cpu_ns()? - start) as f64 / 1e6 / count as f64)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut numbers = Vec::new();
    let mut node_dir = None;
    while let Some(a) = args.next() {
        if a == "--node-rs" {
            node_dir = Some(args.next().context("--node-rs DIR")?);
        } else {
            numbers.push(a.parse::<usize>().context("rounds and count are numbers")?);
        }
    }
    let rounds = numbers.first().copied().unwrap_or(3);
    let count = numbers.get(1).copied().unwrap_or(20);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/argon2_node_rs.mjs");

    let pw = SecretString::from("correct horse battery staple");
    let phc = hash_password(&pw)?;
    let mut memory = HashMemory::default();

    use password_hash::phc::PasswordHash;
    let parsed = PasswordHash::new(&phc).map_err(|e| anyhow::anyhow!("{e}"))?;
    let salt = parsed.salt.context("salt")?;
    let expected = parsed.hash.context("hash")?;
    let params = argon2::Params::try_from(&parsed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let old = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut blocks = vec![argon2::Block::new(); old.params().block_count()];
    let mut out = vec![0u8; expected.as_ref().len()];
    let mut rustcrypto = || {
        old.hash_password_into_with_memory(
            b"correct horse battery staple",
            salt.as_ref(),
            &mut out,
            &mut blocks[..],
        )
        .is_ok()
            && out == expected.as_ref()
    };
    // Warm-up: first use of each memory area faults its pages in.
    verify_with_memory(&phc, &pw, &mut memory);
    rustcrypto();

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    for round in 1..=rounds {
        let ours = cpu_ms_per(count, || verify_with_memory(&phc, &pw, &mut memory))?;
        let theirs = cpu_ms_per(count, &mut rustcrypto)?;
        print!("round {round}: cxauth {ours:.2} ms, rustcrypto {theirs:.2} ms");
        if let Some(dir) = &node_dir {
            let out = std::process::Command::new("node")
                .args([script, dir, &count.to_string()])
                .output()
                .context("running node")?;
            anyhow::ensure!(
                out.status.success(),
                "node: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            print!(
                ", node-rs {} {:.2} ms (sys {:.2})",
                v["version"].as_str().unwrap_or("?"),
                v["cpu_ms"].as_f64().unwrap_or(f64::NAN),
                v["sys_ms"].as_f64().unwrap_or(f64::NAN)
            );
        }
        println!("  (CPU per verification, {count} each)");
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
    Ok(())
}
