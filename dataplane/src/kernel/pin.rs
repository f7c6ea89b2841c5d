//! Pinning under bpffs: what lets vnetd stop and start again without
//! dropping established traffic.
//!
//! The program's maps and its XDP links are pinned in a directory per map
//! layout (`<base>/layout-<N>`, N = [`vnet_common::LAYOUT_VERSION`]). A
//! vnetd that exits (SIGTERM, kill -9, a crash) leaves them: the kernel
//! keeps running the program on every interface and the flows keep
//! forwarding. The next vnetd loads its program against the same maps
//! (aya's `map_pin_path`), swaps it into each pinned link atomically
//! (`BPF_LINK_UPDATE`), and takes over the flows it finds
//! ([`crate::runtime`]'s adoption). A directory of another layout is
//! removed first, with a log line: its flows cannot be read by this
//! program. `vnetd --detach-on-exit` removes everything instead.
//!
//! Links are pinned as `links/<ifname>@<ifindex>@<mode>`: an interface
//! recreated while vnetd was down has another ifindex, and an attachment
//! in another mode cannot be updated in place, so neither is reused. bpffs
//! refuses names with a dot, which interface names may hold (`eth0.100`):
//! a dot is written as `:`, which no interface name holds.

use std::io;
use std::path::{Path, PathBuf};

use super::attach::{Hook, Slot};

/// bpffs's `statfs` magic (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pin directory of this build's map layout.
#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// Opens (creating it if needed) the directory of this layout under
    /// `base`, which must be on bpffs, and removes the directories of other
    /// layouts found there.
    pub fn prepare(base: &Path) -> io::Result<PinDir> {
        std::fs::create_dir_all(base)?;
        if !is_bpffs(base)? {
            return Err(io::Error::other(format!(
                "{} is not on a bpf filesystem: mount one (mount -t bpf bpf /sys/fs/bpf) or \
                 give --bpffs-dir a directory on one",
                base.display()
            )));
        }
        let own = format!("layout-{}", vnet_common::LAYOUT_VERSION);
        for entry in std::fs::read_dir(base)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("layout-") && name != own {
                tracing::warn!(
                    dir = %entry.path().display(),
                    "pinned maps of another layout (another vnet version): removing them; \
                     their flows are dropped"
                );
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        let root = base.join(own);
        std::fs::create_dir_all(root.join("maps"))?;
        std::fs::create_dir_all(root.join("links"))?;
        Ok(PinDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    /// Whether the maps were pinned by an earlier vnetd.
    pub fn has_maps(&self) -> bool {
        self.map(vnet_common::maps::FLOWS).exists()
    }

    pub fn link(&self, ifname: &str, ifindex: u32, hook: Hook) -> PathBuf {
        let name = ifname.replace('.', ":");
        self.root
            .join("links")
            .join(format!("{name}@{ifindex}@{}", hook.pin_name()))
    }

    /// Every pinned link, as (ifname, hook part of the name, path).
    pub fn links(&self) -> io::Result<Vec<(String, String, PathBuf)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.root.join("links"))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // From the right: an interface name may hold `@` itself.
            let mut parts = name.rsplitn(3, '@');
            let (Some(hook), Some(_ifindex), Some(ifname)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            out.push((ifname.replace(':', "."), hook.to_string(), entry.path()));
        }
        out.sort();
        Ok(out)
    }

    /// The pinned links of `ifname`, with the hook slot each is in.
    pub(super) fn links_of(&self, ifname: &str) -> io::Result<Vec<(PathBuf, Option<Slot>)>> {
        Ok(self
            .links()?
            .into_iter()
            .filter(|(i, _, _)| i == ifname)
            .map(|(_, hook, p)| (p, Hook::slot_of_pin_name(&hook)))
            .collect())
    }

    /// Unpins the maps (links first): once the last descriptor closes, the
    /// kernel detaches and frees them.
    pub fn remove_maps(&self) -> io::Result<()> {
        for (_, _, link) in self.links()? {
            remove_pin(&link)?;
        }
        let maps = self.root.join("maps");
        for entry in std::fs::read_dir(&maps)? {
            remove_pin(&entry?.path())?;
        }
        Ok(())
    }

    /// Removes the whole directory (for `--detach-on-exit`).
    pub fn remove(&self) -> io::Result<()> {
        self.remove_maps()?;
        std::fs::remove_dir_all(&self.root)
    }
}

/// Unpins one object; one already gone is not an error.
pub fn remove_pin(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let fs = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(fs.filesystem_type().0 as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pin names read back as the interface they were made for, `@`
    /// and dots included (a plain directory stands in for bpffs).
    #[test]
    fn link_pins_name_their_interface_whatever_it_holds() {
        let dir = std::env::temp_dir().join(format!("vnet-pin-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("links")).unwrap();
        let pins = PinDir { root: dir.clone() };
        for (ifname, ifindex) in [("veth@a", 7), ("veth", 8), ("eth0.100", 9)] {
            let path = pins.link(ifname, ifindex, Hook::Xdp(super::super::AttachMode::Native));
            assert!(!path.file_name().unwrap().to_string_lossy().contains('.'));
            std::fs::write(&path, b"").unwrap();
        }
        let names: Vec<String> = pins
            .links()
            .unwrap()
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        assert_eq!(names, ["eth0.100", "veth", "veth@a"]);
        assert_eq!(pins.links_of("veth").unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
