//! `mxguard check-config`: parse, validate, print warnings.

use std::path::PathBuf;

use mxguard_config::Config;

/// Returns the process exit code.
pub fn run(config: Option<PathBuf>) -> i32 {
    let path = match super::config_path(config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let cfg = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let mut warnings = cfg.warnings();
    let data_dir = &cfg.server.data_dir;
    if data_dir.exists() {
        let probe = data_dir.join(".mxguard-write-test");
        match std::fs::write(&probe, b"") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
            }
            Err(e) => warnings.push(format!(
                "{}: server.data_dir: {} is not writable: {e}",
                path.display(),
                data_dir.display()
            )),
        }
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: configuration OK ({} listener{}, {} local domain{}, {} account{}, {} warning{})",
        path.display(),
        cfg.listeners.len(),
        plural(cfg.listeners.len()),
        cfg.domains.local.len(),
        plural(cfg.domains.local.len()),
        cfg.accounts.len(),
        plural(cfg.accounts.len()),
        warnings.len(),
        plural(warnings.len()),
    );
    0
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
