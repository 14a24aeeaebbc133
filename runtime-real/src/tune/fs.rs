//! Where the tuner reads and writes: the `/sys` and `/proc` roots ([`Roots`]) and the
//! file operations on them ([`TuneFs`]), so tests run the tuner against fixture trees
//! and inject failures the kernel would give (a knob refusing a write as root cannot
//! be staged with file modes alone).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Which tree a knob lives in.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RootKind {
    /// sysfs (`/sys`).
    Sys,
    /// procfs (`/proc`).
    Proc,
}

/// The roots of sysfs and procfs (`/sys`, `/proc` on a real machine).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Roots {
    /// Where sysfs is.
    pub sys: PathBuf,
    /// Where procfs is.
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            proc: PathBuf::from("/proc"),
        }
    }
}

impl Roots {
    /// `<dir>/sys` and `<dir>/proc` (a fixture tree).
    pub fn under(dir: &Path) -> Roots {
        Roots {
            sys: dir.join("sys"),
            proc: dir.join("proc"),
        }
    }

    /// The absolute path of `rel` in the tree `kind`.
    pub fn path(&self, kind: RootKind, rel: &Path) -> PathBuf {
        match kind {
            RootKind::Sys => self.sys.join(rel),
            RootKind::Proc => self.proc.join(rel),
        }
    }
}

/// File operations of the tuner. Knob values are whole small files written with one
/// `write(2)`, as sysfs and procfs require.
pub trait TuneFs: fmt::Debug {
    /// The file's contents.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `value` to an existing file (`create`: may create it).
    fn write(&self, path: &Path, value: &str, create: bool) -> io::Result<()>;
    /// Creates one directory.
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Names in a directory, sorted.
    fn list(&self, path: &Path) -> io::Result<Vec<String>>;
    /// The path with every symbolic link resolved.
    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf>;
    /// Whether something exists at `path`.
    fn exists(&self, path: &Path) -> bool;
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl TuneFs for RealFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str, create: bool) -> io::Result<()> {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .create(create)
            .open(path)?;
        file.write_all(value.as_bytes())
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn canonicalize(&self, path: &Path) -> io::Result<PathBuf> {
        std::fs::canonicalize(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// The tuner's view of a machine: roots plus the file operations on them.
#[derive(Debug)]
pub struct Host<'a> {
    /// The roots.
    pub roots: Roots,
    /// The file operations.
    pub fs: &'a dyn TuneFs,
}

impl Host<'_> {
    /// `<sys>/<rel>`.
    pub fn sys(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.roots.sys.join(rel)
    }

    /// `<proc>/<rel>`.
    pub fn proc(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.roots.proc.join(rel)
    }

    /// A file's contents, trimmed; `None` if it cannot be read.
    pub fn read_trimmed(&self, path: &Path) -> Option<String> {
        self.fs.read(path).ok().map(|s| s.trim().to_string())
    }

    /// A file holding one number; `None` if missing or not a number.
    pub fn read_u64(&self, path: &Path) -> Option<u64> {
        self.read_trimmed(path)?.parse().ok()
    }

    /// Names in a directory, sorted (empty if it cannot be listed).
    pub fn list(&self, path: &Path) -> Vec<String> {
        self.fs.list(path).unwrap_or_default()
    }
}

/// A short reason for an OS error on a knob, as the report shows it.
pub fn describe_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => format!("no permission ({error})"),
        Some(libc::EROFS) => format!("read-only file system ({error})"),
        Some(libc::ENOENT) => "knob not present on this machine".to_string(),
        Some(libc::EISDIR) => format!("not a writable knob ({error})"),
        Some(libc::EINVAL | libc::EIO) => format!("the kernel refused the value ({error})"),
        _ => error.to_string(),
    }
}

/// A file selection like `always [madvise] never`: the options and the chosen one.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Selection {
    /// The option in brackets.
    pub current: Option<String>,
    /// Every option, in order.
    pub options: Vec<String>,
}

impl Selection {
    /// Parses `a [b] c`.
    pub fn parse(text: &str) -> Selection {
        let mut current = None;
        let mut options = Vec::new();
        for word in text.split_whitespace() {
            match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                Some(chosen) => {
                    current = Some(chosen.to_string());
                    options.push(chosen.to_string());
                }
                None => options.push(word.to_string()),
            }
        }
        // A file with one unbracketed option (`none`) has that option chosen.
        if current.is_none() && options.len() == 1 {
            current = options.first().cloned();
        }
        Selection { current, options }
    }

    /// Whether `option` is offered.
    pub fn offers(&self, option: &str) -> bool {
        self.options.iter().any(|o| o == option)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        let s = Selection::parse("always defer [madvise] never\n");
        assert_eq!(s.current.as_deref(), Some("madvise"));
        assert!(s.offers("never") && !s.offers("x"));
        assert_eq!(Selection::parse("none").current.as_deref(), Some("none"));
        assert_eq!(Selection::parse("a b").current, None);
    }
}
