//! The private folder holding the workers' Unix sockets: mode 0700, so only
//! corral's own user can connect to a worker and bypass the edge.

use anyhow::Context;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    pub fn create(configured: &str) -> anyhow::Result<Self> {
        let parent = if configured.is_empty() {
            std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .filter(|p| p.is_dir())
                .unwrap_or_else(std::env::temp_dir)
        } else {
            PathBuf::from(configured)
        };
        let path = parent.join(format!("corral-{}", std::process::id()));
        // A leftover from a killed master with a recycled pid: ours now.
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&path)
            .with_context(|| format!("cannot create runtime dir {}", path.display()))?;
        Ok(RuntimeDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn worker_socket(&self, id: u64) -> PathBuf {
        self.path.join(format!("w{id}.sock"))
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
