//! Local files (`file://`), opened beneath the storage roots every time they are touched.
//!
//! With `storage.local_roots` set, each root is opened once, resolved, when the client is
//! made, and every later open, create, rename, list or delete goes through that root's
//! directory with Linux's `openat2(RESOLVE_BENEATH)`: a symbolic link (or a `..` a link
//! brings in) that leads out of the root fails the call, whenever the link appeared. So a
//! job cannot be turned outside its root after submission by swapping a path for a link:
//! the check is the open itself. Directories are created and entries removed or renamed
//! relative to a directory already opened this way, never through a path again.
//!
//! A path belongs to the root it starts with, as configured or as resolved. Without roots,
//! the same calls run from `/` and follow links as any open would.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How each path is resolved beneath its root when roots are configured: no escape, and
/// no `/proc` magic links.
const CONFINED: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// The local file system as jobs may touch it: beneath the configured roots, or anywhere.
#[derive(Debug, Clone)]
pub struct LocalFiles {
    roots: Arc<Roots>,
}

#[derive(Debug)]
enum Roots {
    /// No roots configured: every path, from `/`.
    Anywhere(OwnedFd),
    /// The roots that exist, opened (a root that does not exist allows nothing).
    Confined(Vec<Root>),
}

#[derive(Debug)]
struct Root {
    configured: PathBuf,
    resolved: PathBuf,
    dir: OwnedFd,
}

/// A directory opened beneath its root, with the path it was opened as (for messages).
#[derive(Debug)]
pub struct OpenDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl LocalFiles {
    /// The roots `roots` names (empty: anywhere); each is opened now.
    pub fn new(roots: &[String]) -> Self {
        let roots = if roots.is_empty() {
            // `/` that cannot be opened (no such system) leaves nothing reachable.
            open_plain(Path::new("/")).map_or(Roots::Confined(Vec::new()), Roots::Anywhere)
        } else {
            Roots::Confined(roots.iter().filter_map(|root| open_root(root)).collect())
        };
        Self {
            roots: Arc::new(roots),
        }
    }

    /// True when paths are confined to roots.
    pub fn is_confined(&self) -> bool {
        matches!(*self.roots, Roots::Confined(_))
    }

    /// The roots as resolved, for messages.
    pub fn describe_roots(&self) -> String {
        match &*self.roots {
            Roots::Anywhere(_) => "/".into(),
            Roots::Confined(roots) => roots
                .iter()
                .map(|r| r.resolved.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Checks that `path`, as far as it exists, stays beneath its root; `Err` says why
    /// not (no root holds it, a link leads out, a parent is not a directory).
    pub fn check(&self, path: &Path) -> Result<(), io::Error> {
        let (root, relative, resolve) = self.locate(path)?;
        let mut existing = relative.as_path();
        loop {
            match openat2(root, existing, libc::O_PATH, resolve) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => match existing.parent() {
                    Some(parent) => existing = parent,
                    None => return Ok(()),
                },
                Err(e) => return Err(self.explain(path, e)),
            }
        }
    }

    /// Opens a regular file for reading (never blocking on a FIFO or a device).
    pub fn open(&self, path: &Path) -> io::Result<File> {
        let (root, relative, resolve) = self.locate(path)?;
        let fd = openat2(
            root,
            &relative,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
            resolve,
        )
        .map_err(|e| self.explain(path, e))?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(file)
    }

    /// Opens directory `dir`, creating it and its missing parents, each beneath the root.
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<OpenDir> {
        let (root, relative, resolve) = self.locate(dir)?;
        let mut current = openat2(root, Path::new("."), DIRECTORY, resolve)?;
        let mut walked = PathBuf::new();
        for part in relative.components() {
            let name = part.as_os_str();
            walked.push(name);
            match mkdirat(current.as_fd(), Path::new(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(self.explain(dir, e)),
            }
            // Opened from the root again, so a link met here is judged against the root.
            current =
                openat2(root, &walked, DIRECTORY, resolve).map_err(|e| self.explain(dir, e))?;
        }
        Ok(OpenDir {
            fd: current,
            path: dir.to_path_buf(),
        })
    }

    /// Opens the existing directory `dir` beneath its root.
    pub fn open_dir(&self, dir: &Path) -> io::Result<OpenDir> {
        let (root, relative, resolve) = self.locate(dir)?;
        let fd = openat2(root, &relative, DIRECTORY, resolve).map_err(|e| self.explain(dir, e))?;
        Ok(OpenDir {
            fd,
            path: dir.to_path_buf(),
        })
    }

    /// Removes the file (or link) at `path`; its parent is opened beneath the root.
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (parent, name) = split(path)?;
        self.open_dir(parent)?.remove(name)
    }

    /// Every file under `dir` (links listed as files, never followed), sorted.
    pub fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        self.open_dir(dir)?.walk(&mut |path, is_dir| {
            if !is_dir {
                found.push(path.to_path_buf());
            }
        })?;
        found.sort();
        Ok(found)
    }

    /// Removes `dir` and everything in it, each entry through its opened parent.
    pub fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let (parent, name) = split(dir)?;
        let parent = self.open_dir(parent)?;
        let opened = parent.child_dir(name)?;
        opened.empty()?;
        unlinkat(parent.fd.as_fd(), Path::new(name), libc::AT_REMOVEDIR)
    }

    /// The root holding `path`, the path relative to it, and how to resolve beneath it.
    fn locate<'a>(&'a self, path: &Path) -> io::Result<(BorrowedFd<'a>, PathBuf, u64)> {
        match &*self.roots {
            Roots::Anywhere(slash) => {
                let relative = path.strip_prefix("/").unwrap_or(path);
                Ok((slash.as_fd(), dot_if_empty(relative), 0))
            }
            Roots::Confined(roots) => roots
                .iter()
                .find_map(|root| {
                    let relative = path
                        .strip_prefix(&root.configured)
                        .or_else(|_| path.strip_prefix(&root.resolved))
                        .ok()?;
                    Some((root.dir.as_fd(), dot_if_empty(relative), CONFINED))
                })
                .ok_or_else(|| outside(path, &self.describe_roots())),
        }
    }

    /// `error` from resolving `path`, with an escape told as such.
    fn explain(&self, path: &Path, error: io::Error) -> io::Error {
        let escaped = matches!(error.raw_os_error(), Some(libc::EXDEV | libc::ELOOP));
        if escaped && self.is_confined() {
            return outside(path, &self.describe_roots());
        }
        error
    }
}

impl OpenDir {
    /// Creates `name` in this directory for writing; it must not exist (nor be a link).
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        let fd = openat2(
            self.fd.as_fd(),
            Path::new(name),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            CONFINED,
        )?;
        Ok(File::from(fd))
    }

    /// Renames `from` to `to`, both in this directory (a link at `to` is replaced, not
    /// followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from, to) = (c_path(Path::new(from))?, c_path(Path::new(to))?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: both names are NUL-terminated strings that outlive the call; the
        // directory descriptor is open for as long as `self`.
        let done = unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Removes the entry `name` (a file or a link) of this directory.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        unlinkat(self.fd.as_fd(), Path::new(name), 0)
    }

    /// The path this directory was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child_dir(&self, name: &str) -> io::Result<OpenDir> {
        let fd = openat2(
            self.fd.as_fd(),
            Path::new(name),
            DIRECTORY | libc::O_NOFOLLOW,
            CONFINED,
        )?;
        Ok(OpenDir {
            fd,
            path: self.path.join(name),
        })
    }

    /// The entries of this directory, each with whether it is a directory (links are
    /// not).
    fn entries(&self) -> io::Result<Vec<(String, bool)>> {
        // The descriptor's own `/proc` entry is the directory already opened, so listing
        // it cannot be redirected.
        let listing = std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))?;
        let mut entries = Vec::new();
        for entry in listing {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            entries.push((name, entry.file_type()?.is_dir()));
        }
        Ok(entries)
    }

    /// Calls `visit` with every path under this directory, depth first.
    fn walk(&self, visit: &mut dyn FnMut(&Path, bool)) -> io::Result<()> {
        for (name, is_dir) in self.entries()? {
            let path = self.path.join(&name);
            visit(&path, is_dir);
            if is_dir {
                self.child_dir(&name)?.walk(visit)?;
            }
        }
        Ok(())
    }

    /// Removes everything in this directory.
    fn empty(&self) -> io::Result<()> {
        for (name, is_dir) in self.entries()? {
            if is_dir {
                self.child_dir(&name)?.empty()?;
                unlinkat(self.fd.as_fd(), Path::new(&name), libc::AT_REMOVEDIR)?;
            } else {
                self.remove(&name)?;
            }
        }
        Ok(())
    }
}

/// Flags of a directory opened to work in.
const DIRECTORY: i32 = libc::O_RDONLY | libc::O_DIRECTORY;

/// The error of a path that no root holds or that leads out of its root.
fn outside(path: &Path, roots: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "{} leads outside the local roots (storage.local_roots: {roots})",
            path.display()
        ),
    )
}

fn dot_if_empty(relative: &Path) -> PathBuf {
    if relative.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        relative.to_path_buf()
    }
}

/// A path's parent and last name.
fn split(path: &Path) -> io::Result<(&Path, &str)> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file in a directory", path.display()),
        )),
    }
}

fn open_root(root: &str) -> Option<Root> {
    let resolved = std::fs::canonicalize(root).ok()?;
    let dir = open_plain(&resolved).ok()?;
    Some(Root {
        configured: PathBuf::from(root),
        resolved,
        dir,
    })
}

/// Opens a directory the ordinary way (a configured root, or `/`).
fn open_plain(dir: &Path) -> io::Result<OwnedFd> {
    let file = std::fs::File::open(dir)?;
    Ok(OwnedFd::from(file))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path holds a NUL byte"))
}

/// `openat2(2)`: opens `path` relative to `dir` with `flags` (close-on-exec added) under
/// `resolve`.
fn openat2(dir: BorrowedFd<'_>, path: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let name = c_path(path)?;
    // SAFETY: `open_how` is plain data; all-zero is its documented empty value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 { 0o666 } else { 0 };
    how.resolve = resolve;
    loop {
        // SAFETY: `name` is NUL-terminated and `how` is a valid `open_how` of the size
        // passed; both outlive the call. A non-negative result is a new descriptor we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                name.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            let fd =
                RawFd::try_from(fd).map_err(|_| io::Error::other("descriptor out of range"))?;
            // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EINTR | libc::EAGAIN) => continue,
            Some(libc::ENOSYS) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this kernel has no openat2 (Linux 5.6 or later), which keeps files inside \
                     storage.local_roots",
                ))
            }
            _ => return Err(error),
        }
    }
}

fn mkdirat(dir: BorrowedFd<'_>, name: &Path) -> io::Result<()> {
    let name = c_path(name)?;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o777) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn unlinkat(dir: BorrowedFd<'_>, name: &Path, flags: i32) -> io::Result<()> {
    let name = c_path(name)?;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Setup {
        root: tempfile::TempDir,
        outside: tempfile::TempDir,
        files: LocalFiles,
    }

    fn setup() -> Setup {
        let root = tempfile::tempdir().expect("root");
        let outside = tempfile::tempdir().expect("elsewhere");
        std::fs::write(outside.path().join("secret.mp4"), b"secret").expect("file");
        let files = LocalFiles::new(&[root.path().display().to_string()]);
        Setup {
            root,
            outside,
            files,
        }
    }

    fn escaped(error: io::Error) -> bool {
        error.to_string().contains("storage.local_roots")
    }

    #[test]
    fn a_file_swapped_for_a_link_out_of_the_root_is_not_opened() {
        let Setup {
            root,
            outside,
            files,
        } = setup();
        let input = root.path().join("in.mp4");
        std::fs::write(&input, b"inside").expect("file");
        assert!(files.check(&input).is_ok());
        assert!(files.open(&input).is_ok());
        // Swapped after the check: the open itself refuses.
        std::fs::remove_file(&input).expect("remove");
        std::os::unix::fs::symlink(outside.path().join("secret.mp4"), &input).expect("link");
        assert!(escaped(files.open(&input).expect_err("escape")));
        // A relative link that climbs out is refused the same way.
        let climbing = root.path().join("climb.mp4");
        let up = format!(
            "../{}/secret.mp4",
            outside.path().file_name().expect("name").to_string_lossy()
        );
        std::os::unix::fs::symlink(up, &climbing).expect("link");
        assert!(escaped(files.open(&climbing).expect_err("escape")));
        // A link that stays inside is followed.
        std::fs::write(root.path().join("real.mp4"), b"x").expect("file");
        std::os::unix::fs::symlink("real.mp4", root.path().join("alias.mp4")).expect("link");
        assert!(files.open(&root.path().join("alias.mp4")).is_ok());
        assert!(escaped(
            files.check(Path::new("/etc/passwd")).expect_err("no root")
        ));
    }

    #[test]
    fn an_output_folder_swapped_for_a_link_gets_nothing_written_outside() {
        let Setup {
            root,
            outside,
            files,
        } = setup();
        let out = root.path().join("out");
        std::os::unix::fs::symlink(outside.path(), &out).expect("link");
        let error = files
            .create_dir_all(&out.join("jobs/j1"))
            .expect_err("escape");
        assert!(escaped(error), "refused as an escape");
        assert!(escaped(
            files
                .remove_file(&out.join("secret.mp4"))
                .expect_err("escape")
        ));
        assert!(outside.path().join("secret.mp4").exists());
        assert_eq!(std::fs::read_dir(outside.path()).expect("dir").count(), 1);
    }

    #[test]
    fn directories_are_made_listed_and_removed_inside_the_root() {
        let Setup { root, files, .. } = setup();
        let jobs = root.path().join("scratch/jobs/j1");
        let dir = files.create_dir_all(&jobs).expect("made");
        let mut file = dir.create_new(".part").expect("created");
        io::Write::write_all(&mut file, b"chunk").expect("written");
        dir.rename(".part", "00000.mp4").expect("renamed");
        assert!(
            dir.create_new("00000.mp4").is_err(),
            "never over an existing name"
        );
        let nested = files.create_dir_all(&jobs.join("logs")).expect("made");
        nested.create_new("a.log").expect("created");
        assert_eq!(
            files.list(&root.path().join("scratch")).expect("listed"),
            [jobs.join("00000.mp4"), jobs.join("logs/a.log")]
        );
        files.remove_file(&jobs.join("00000.mp4")).expect("removed");
        files
            .remove_dir_all(&root.path().join("scratch"))
            .expect("removed");
        assert!(!root.path().join("scratch").exists());
        let error = files.open(root.path()).expect_err("a directory");
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }

    #[test]
    fn without_roots_every_path_is_reachable() {
        let anywhere = LocalFiles::new(&[]);
        assert!(!anywhere.is_confined());
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a/b");
        anywhere.create_dir_all(&path).expect("made");
        assert!(anywhere.check(&path.join("c.mp4")).is_ok());
        assert_eq!(
            anywhere.list(dir.path()).expect("listed"),
            Vec::<PathBuf>::new()
        );
    }
}
