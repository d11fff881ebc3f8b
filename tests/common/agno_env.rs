//! The pinned agno Python environment for the Agno end-to-end tests: `$AGNO_PYTHON` if set,
//! else `<repo>/.tools/agno-venv/bin/python`, installed on first use with `agno/install.sh`
//! (under a file lock: test binaries run in parallel). Never skipped: the Agno tests are part
//! of the contract, so a missing environment that cannot be installed is a failure.

use std::path::{Path, PathBuf};

/// Interpreter of the agno venv.
pub fn agno_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = match std::env::var_os("AGNO_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => root.join(".tools/agno-venv/bin/python"),
    };
    if !works(&path) {
        install(root);
    }
    assert!(
        works(&path),
        "the agno environment is missing: run `bash agno/install.sh` (looked for {})",
        path.display()
    );
    path
}

/// The tiny stdio MCP server of the tests (`mul(a, b)`).
pub fn mcp_calc_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("agno/mcp_calc.py")
}

fn works(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import agno, mcp, openai; from agno.team import Team"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn install(root: &Path) {
    use std::os::fd::AsRawFd;
    let _ = std::fs::create_dir_all(root.join(".tools"));
    let Ok(lock) = std::fs::File::create(root.join(".tools/agno-venv.lock")) else {
        return;
    };
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    unsafe {
        libc::flock(lock.as_raw_fd(), libc::LOCK_EX);
    }
    let venv = root.join(".tools/agno-venv/bin/python");
    if works(&venv) {
        return;
    }
    let status = std::process::Command::new("bash")
        .arg(root.join("agno/install.sh"))
        .status();
    eprintln!("agno/install.sh: {status:?}");
}
