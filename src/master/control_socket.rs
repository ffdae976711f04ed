//! The control socket (`[server] control_socket`, by default
//! `control.sock` in the runtime dir): bound here once, mode 0600 (and
//! owned by `[server] user` when set), and served by every edge
//! (`edge::status::socket`) for `corral status` and `corral dump`.

use anyhow::Context;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the file we bound: a later master (an upgrade)
    /// may have bound the same path, and its socket is not ours to remove.
    bound: (u64, u64),
}

/// Where the socket is: the configured path, else in the runtime dir.
pub fn path(configured: Option<&Path>, runtime_dir: &Path) -> PathBuf {
    configured.map_or_else(|| runtime_dir.join("control.sock"), Path::to_path_buf)
}

/// For `corral status` and `corral dump`: the socket of the corral that
/// runs `site`. The default place holds the master's pid (its runtime dir
/// is `corral-<pid>`), found through `[server] pid_file`, under the
/// configured runtime dir or wherever the master's environment put it.
pub fn find(site: &crate::config::Site) -> anyhow::Result<PathBuf> {
    if let Some(configured) = &site.control_socket {
        return Ok(configured.clone());
    }
    let Some(pid_file) = &site.pid_file else {
        anyhow::bail!(
            "{}: set [server] control_socket (or [server] pid_file), or pass --socket",
            site.file.display()
        );
    };
    let pid = super::pid_file::running_pid(pid_file).with_context(|| {
        format!(
            "corral is not running (no live pid in {})",
            pid_file.display()
        )
    })?;
    let runtime = &site.config.server.runtime_dir;
    let parents: Vec<PathBuf> = if runtime.is_empty() {
        let xdg = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
        xdg.into_iter().chain([std::env::temp_dir()]).collect()
    } else {
        vec![PathBuf::from(runtime)]
    };
    let tried: Vec<PathBuf> = parents
        .iter()
        .map(|p| p.join(format!("corral-{pid}")).join("control.sock"))
        .collect();
    tried.iter().find(|p| p.exists()).cloned().with_context(|| {
        format!(
            "no control socket for corral pid {pid} (looked at {}); set [server] control_socket",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

impl ControlSocket {
    pub fn bind(path: PathBuf, site: &crate::config::Site) -> anyhow::Result<Self> {
        // A leftover from a killed run, or the socket of the corral this
        // one upgrades: the newest master answers from now on.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).with_context(|| {
            format!(
                "cannot bind the control socket {} ([server] control_socket)",
                path.display()
            )
        })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        super::privileges::chown_to_user(site, &path)?;
        let meta = std::fs::metadata(&path)?;
        Ok(ControlSocket {
            listener,
            bound: (meta.dev(), meta.ino()),
            path,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let ours = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.bound);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
