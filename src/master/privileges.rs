//! `[server] user` / `group`: the master keeps root (it binds the ports
//! and may need to bind again), every child drops to the configured user
//! right after fork, before it touches a socket or runs app code.

use crate::config::Site;
use anyhow::{anyhow, Context};
use nix::unistd::{chown, setgid, setgroups, setuid, Group, User};
use std::path::Path;

fn resolve(site: &Site) -> anyhow::Result<Option<(User, Option<Group>)>> {
    let server = &site.config.server;
    if server.user.is_empty() {
        return Ok(None);
    }
    let user =
        User::from_name(&server.user)?.ok_or_else(|| anyhow!("no user named `{}`", server.user))?;
    let group = if server.group.is_empty() {
        None
    } else {
        Some(
            Group::from_name(&server.group)?
                .ok_or_else(|| anyhow!("no group named `{}`", server.group))?,
        )
    };
    Ok(Some((user, group)))
}

/// Makes the private runtime dir belong to the unprivileged user, so its
/// workers can create their sockets there (it stays mode 0700).
pub fn chown_to_user(site: &Site, dir: &Path) -> anyhow::Result<()> {
    if let Some((user, group)) = resolve(site)? {
        let gid = group.map_or(user.gid, |g| g.gid);
        chown(dir, Some(user.uid), Some(gid))
            .with_context(|| format!("cannot hand {} to user {}", dir.display(), user.name))?;
    }
    Ok(())
}

/// In a freshly forked child: become the configured user and group.
pub fn drop_privileges(site: &Site) -> anyhow::Result<()> {
    let Some((user, group)) = resolve(site)? else {
        return Ok(());
    };
    let gid = group.map_or(user.gid, |g| g.gid);
    setgroups(&[gid]).context("setgroups")?;
    setgid(gid).context("setgid")?;
    setuid(user.uid).with_context(|| format!("cannot become user {}", user.name))?;
    Ok(())
}

/// In `check`'s import probe: become the configured user when this process
/// can (root), so the app, its virtualenv and chdir are read with the
/// permissions serve's workers will have. Without root it stays as it is:
/// a deploy is often checked by a user who cannot switch.
pub fn as_workers_will_be(site: &Site) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    drop_privileges(site)
}
