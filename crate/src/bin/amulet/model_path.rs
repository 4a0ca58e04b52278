//! Finds the model file: --model, else $AMULET_MODEL, else the manifest's default model,
//! fetched by models/fetch.sh when it is not in models/cache yet.

use std::path::{Path, PathBuf};
use std::process::Command;

use amulet::{AmuletError, Result};

/// The repository's models/ folder: searched upwards from the working directory and from
/// the executable (target/release/amulet lives two levels under the root).
fn models_dir() -> Option<PathBuf> {
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            let m = dir.join("models");
            if m.join("models.json").is_file() && m.join("fetch.sh").is_file() {
                return Some(m);
            }
        }
    }
    None
}

pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("AMULET_MODEL") {
        return Ok(PathBuf::from(p));
    }
    let dir = models_dir().ok_or_else(|| {
        AmuletError::bad_option("model", "no --model given and no models/ folder found to fetch the default")
    })?;
    eprintln!("using the default model (models/fetch.sh)");
    let out = Command::new("bash")
        .arg(dir.join("fetch.sh"))
        .output()
        .map_err(|e| AmuletError::Io(format!("running models/fetch.sh: {e}")))?;
    if !out.status.success() {
        return Err(AmuletError::Io(format!(
            "models/fetch.sh failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default().to_string();
    Ok(PathBuf::from(path))
}
