//! Windows image paths in one comparable form, and where they point.
//!
//! Stacking counts hosts per image path, so the same binary must produce
//! the same key on every host and in every log source: Sysmon, Security
//! 4688 and EDR exports spell paths differently (case, `\\?\` and `\??\`
//! prefixes, `%SystemRoot%` variables, kernel device paths, 8.3 short
//! names), and per-user installs differ only in the user name.
//! [`normalise_image`] removes those differences and nothing else.

use hashbrown::HashMap;

/// The system directories assumed on the system drive `c:`. Environment
/// variables and device paths of the system volume are rewritten onto it:
/// Windows is installed on `C:` on practically every managed machine, and a
/// key that differs from the 4688/Sysmon spelling would split a common
/// binary into rare halves.
const SYSTEM_DRIVE: &str = "c:";

/// Path prefixes (lowercase) and what they stand for. Longer prefixes first
/// where one is a prefix of another.
const PREFIXES: [(&str, &str); 16] = [
    ("%systemroot%", "c:\\windows"),
    ("%windir%", "c:\\windows"),
    ("\\systemroot", "c:\\windows"),
    ("%systemdrive%", SYSTEM_DRIVE),
    ("%programfiles(x86)%", "c:\\program files (x86)"),
    ("%programfiles%", "c:\\program files"),
    ("%programw6432%", "c:\\program files"),
    (
        "%commonprogramfiles(x86)%",
        "c:\\program files (x86)\\common files",
    ),
    ("%commonprogramfiles%", "c:\\program files\\common files"),
    ("%programdata%", "c:\\programdata"),
    ("%allusersprofile%", "c:\\programdata"),
    ("%public%", "c:\\users\\public"),
    ("%localappdata%", "c:\\users\\*\\appdata\\local"),
    ("%appdata%", "c:\\users\\*\\appdata\\roaming"),
    ("%userprofile%", "c:\\users\\*"),
    ("%temp%", "c:\\users\\*\\appdata\\local\\temp"),
];

/// `%TMP%` is the same directory as `%TEMP%`.
const TMP_VARIABLE: (&str, &str) = ("%tmp%", "c:\\users\\*\\appdata\\local\\temp");

/// Profile directories that belong to no person: kept by name, because
/// they are not per-user installs and `public` is itself suspicious.
const SHARED_PROFILES: [&str; 4] = ["public", "default", "default user", "all users"];

/// Top-level directories of the system volume: a kernel device path
/// (`\device\harddiskvolume3\windows\…`) into one of these is on `c:`.
const SYSTEM_VOLUME_DIRS: [&str; 6] = [
    "windows",
    "program files",
    "program files (x86)",
    "programdata",
    "users",
    "perflogs",
];

/// The image path `raw` in comparable form:
///
/// - trimmed, surrounding quotes removed, `/` turned into `\`, lowercase
///   (Windows paths are case-insensitive);
/// - `\\?\`, `\??\` and `\\.\` prefixes removed (`\\?\UNC\srv\share` →
///   `\\srv\share`);
/// - environment variables and `\SystemRoot` rewritten (`%SystemRoot%` →
///   `c:\windows`, `%AppData%` → `c:\users\*\appdata\roaming`, …);
/// - kernel device paths: `\device\mup\` → `\\` (a UNC path), and
///   `\device\harddiskvolumeN\` → `c:\` when the path continues into a
///   directory that lives on the system volume (`windows`, `program files`,
///   `users`, …); other volumes keep their device name;
/// - the 8.3 names `progra~1`/`progra~2` spelled out;
/// - the user name in `c:\users\<name>\` replaced by `*` (so that a
///   per-user install is one image on every host), except the shared
///   profiles (`public`, `default`, …);
/// - repeated backslashes collapsed (outside a leading UNC `\\`).
///
/// A path that starts with `/` is a Unix path (Sysmon for Linux logs
/// EventID 1 too): its case is kept (Unix file names are case-sensitive),
/// `//` runs collapse and `/home/<name>/` becomes `/home/*/`.
///
/// Returns `None` for a path that is empty after trimming.
pub fn normalise_image(raw: &str) -> Option<String> {
    let trimmed = raw.trim().trim_matches('"').trim();
    if trimmed.is_empty() {
        return None;
    }
    if trimmed.starts_with('/') {
        return Some(normalise_unix(trimmed));
    }
    let mut path = trimmed.replace('/', "\\").to_lowercase();

    for prefix in ["\\\\?\\unc\\", "\\??\\unc\\"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            path = format!("\\\\{rest}");
        }
    }
    for prefix in ["\\\\?\\", "\\??\\", "\\\\.\\"] {
        if let Some(rest) = path.strip_prefix(prefix) {
            path = rest.to_owned();
        }
    }

    if let Some(rest) = path.strip_prefix("\\device\\mup\\") {
        path = format!("\\\\{rest}");
    } else if let Some(rest) = path.strip_prefix("\\device\\harddiskvolume") {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && let Some(after) = rest[digits..].strip_prefix('\\')
        {
            let top = after.split('\\').next().unwrap_or("");
            if SYSTEM_VOLUME_DIRS.contains(&top) {
                path = format!("{SYSTEM_DRIVE}\\{after}");
            }
        }
    }

    for (variable, expansion) in PREFIXES.iter().chain([&TMP_VARIABLE]) {
        if let Some(rest) = path.strip_prefix(variable)
            && (rest.is_empty() || rest.starts_with('\\'))
        {
            path = format!("{expansion}{rest}");
            break;
        }
    }

    path = path
        .replace("\\progra~1\\", "\\program files\\")
        .replace("\\progra~2\\", "\\program files (x86)\\");

    // Collapse `\\` runs, keeping a leading UNC `\\`.
    let (lead, body) = match path.strip_prefix("\\\\") {
        Some(body) => ("\\\\", body),
        None => ("", path.as_str()),
    };
    let mut collapsed = String::with_capacity(path.len());
    collapsed.push_str(lead);
    let mut previous_backslash = false;
    for c in body.chars() {
        if c == '\\' && previous_backslash {
            continue;
        }
        previous_backslash = c == '\\';
        collapsed.push(c);
    }
    let mut path = collapsed;

    // `x:\users\<name>\…` → `x:\users\*\…`.
    if let Some(rest) = path.get(2..).and_then(|r| r.strip_prefix("\\users\\"))
        && path.as_bytes().get(1) == Some(&b':')
    {
        let (name, tail) = match rest.split_once('\\') {
            Some((name, tail)) => (name, Some(tail)),
            None => (rest, None),
        };
        if !name.is_empty() && name != "*" && !SHARED_PROFILES.contains(&name) {
            let drive = &path[..2];
            path = match tail {
                Some(tail) => format!("{drive}\\users\\*\\{tail}"),
                // `c:\users\alice` is a directory, not a binary of alice:
                // leave it.
                None => path.clone(),
            };
        }
    }
    Some(path)
}

/// A Unix path: `//` runs collapsed, the user name under `/home/` (and
/// `/Users/`) folded to `*`.
fn normalise_unix(path: &str) -> String {
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > 2 && (parts[0] == "home" || parts[0] == "Users") {
        parts[1] = "*";
    }
    format!("/{}", parts.join("/"))
}

/// Why a normalised image path is in a location any user (or any process
/// of a user) can write to, or `None` when it is not. Binaries there are
/// dropped by installers and updaters too, so this only raises interest in
/// an image that is also rare.
pub fn user_writable_location(image: &str) -> Option<&'static str> {
    if image.starts_with('/') {
        let directory = image.rsplit_once('/').map_or("", |(dir, _)| dir);
        let dir = format!("{directory}/");
        return if ["/tmp/", "/var/tmp/", "/dev/shm/"]
            .iter()
            .any(|temp| dir.starts_with(temp))
        {
            Some("a temporary directory")
        } else if dir.starts_with("/home/") || dir.starts_with("/Users/") {
            Some("a user's home")
        } else {
            None
        };
    }
    // Checked on the directory, so that `c:\temp.exe` is not "in temp".
    let directory = image.rsplit_once('\\').map_or("", |(dir, _)| dir);
    let dir = format!("{directory}\\");
    let in_dir = |name: &str| dir.contains(&format!("\\{name}\\"));
    if dir.starts_with("c:\\users\\public\\") || in_dir("users\\public") {
        Some("the Public profile")
    } else if in_dir("appdata") {
        Some("a user's AppData")
    } else if in_dir("temp") || in_dir("tmp") {
        Some("a temporary directory")
    } else if in_dir("$recycle.bin") {
        Some("the recycle bin")
    } else if in_dir("programdata") {
        Some("ProgramData")
    } else if in_dir("perflogs") {
        Some("PerfLogs")
    } else if dir.contains("\\users\\") {
        Some("a user profile")
    } else {
        None
    }
}

/// The file name of a normalised image path (Windows or Unix).
pub fn file_name(image: &str) -> &str {
    image.rsplit(['\\', '/']).next().unwrap_or(image)
}

/// A host name in the form hosts are compared in: lowercase, the DNS
/// domain removed (`WS01.corp.example` and `ws01` are one host; Sysmon and
/// Security logs do not agree on which they write). Addresses are kept
/// whole. `None` for an empty or `-` name.
pub fn normalise_host(raw: &str) -> Option<String> {
    let host = raw.trim().trim_end_matches('.');
    if host.is_empty() || host == "-" {
        return None;
    }
    let host = host.to_lowercase();
    if host.parse::<std::net::IpAddr>().is_ok() {
        return Some(host);
    }
    Some(match host.split_once('.') {
        Some((short, _)) if !short.is_empty() => short.to_owned(),
        _ => host,
    })
}

/// Most entries a [`Memo`] keeps; later inputs are computed every time.
pub const MAX_MEMO_ENTRIES: usize = 50_000;

/// What was computed from a logged value, cached by that value. Logs
/// repeat a few thousand image and host spellings millions of times, and
/// normalising them (lowercasing, prefix rewrites) and finding their
/// stack entry costs far more than one hash lookup; the bound keeps a
/// shard of unique spellings from growing the cache without limit.
#[derive(Debug)]
pub struct Memo<V> {
    cache: HashMap<String, V>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            cache: HashMap::new(),
        }
    }
}

impl<V: Copy> Memo<V> {
    /// `compute(raw)`, from the cache when `raw` was seen before.
    pub fn get(&mut self, raw: &str, compute: impl FnOnce(&str) -> V) -> V {
        if let Some(&value) = self.cache.get(raw) {
            return value;
        }
        let value = compute(raw);
        if self.cache.len() < MAX_MEMO_ENTRIES {
            self.cache.insert(raw.to_owned(), value);
        }
        value
    }

    /// Inputs cached.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(raw: &str) -> String {
        normalise_image(raw).expect("a path")
    }

    #[test]
    fn spellings_of_one_binary_normalise_alike() {
        let expected = "c:\\windows\\system32\\svchost.exe";
        for raw in [
            "C:\\Windows\\System32\\svchost.exe",
            "c:\\windows\\system32\\SVCHOST.EXE",
            "\"C:\\Windows\\System32\\svchost.exe\"",
            "\\\\?\\C:\\Windows\\System32\\svchost.exe",
            "\\??\\C:\\Windows\\System32\\svchost.exe",
            "%SystemRoot%\\System32\\svchost.exe",
            "%windir%\\system32\\svchost.exe",
            "\\SystemRoot\\System32\\svchost.exe",
            "%SystemDrive%\\Windows\\System32\\svchost.exe",
            "\\Device\\HarddiskVolume3\\Windows\\System32\\svchost.exe",
            "C:/Windows/System32/svchost.exe",
            "C:\\Windows\\\\System32\\svchost.exe",
            "  C:\\Windows\\System32\\svchost.exe ",
        ] {
            assert_eq!(n(raw), expected, "{raw}");
        }
        assert_eq!(
            n("C:\\PROGRA~1\\Vendor\\agent.exe"),
            "c:\\program files\\vendor\\agent.exe"
        );
        assert_eq!(
            n("%ProgramFiles(x86)%\\Vendor\\agent.exe"),
            "c:\\program files (x86)\\vendor\\agent.exe"
        );
        assert_eq!(n("%ProgramData%\\x\\y.exe"), "c:\\programdata\\x\\y.exe");
    }

    #[test]
    fn per_user_paths_stack_across_users() {
        let teams = "c:\\users\\*\\appdata\\local\\microsoft\\teams\\current\\teams.exe";
        assert_eq!(
            n("C:\\Users\\alice\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe"),
            teams
        );
        assert_eq!(
            n("C:\\Users\\bob.smith\\AppData\\Local\\Microsoft\\Teams\\current\\Teams.exe"),
            teams
        );
        assert_eq!(
            n("%LocalAppData%\\Microsoft\\Teams\\current\\Teams.exe"),
            teams
        );
        assert_eq!(
            n("%TEMP%\\x.exe"),
            "c:\\users\\*\\appdata\\local\\temp\\x.exe"
        );
        assert_eq!(n("%tmp%\\x.exe"), n("%temp%\\x.exe"));
        // Shared profiles keep their name.
        assert_eq!(n("C:\\Users\\Public\\x.exe"), "c:\\users\\public\\x.exe");
        assert_eq!(n("%PUBLIC%\\x.exe"), "c:\\users\\public\\x.exe");
        assert_eq!(n("C:\\Users\\alice"), "c:\\users\\alice");
    }

    #[test]
    fn other_volumes_and_shares_keep_their_identity() {
        assert_eq!(
            n("\\Device\\HarddiskVolume5\\tools\\x.exe"),
            "\\device\\harddiskvolume5\\tools\\x.exe"
        );
        assert_eq!(
            n("\\Device\\Mup\\fs01\\share\\x.exe"),
            "\\\\fs01\\share\\x.exe"
        );
        assert_eq!(
            n("\\\\?\\UNC\\fs01\\share\\x.exe"),
            "\\\\fs01\\share\\x.exe"
        );
        assert_eq!(n("D:\\Tools\\x.exe"), "d:\\tools\\x.exe");
        // A variable that is only a prefix of a word is not expanded.
        assert_eq!(n("%tempdir%\\x.exe"), "%tempdir%\\x.exe");
        assert_eq!(normalise_image("  \"\" "), None);
    }

    #[test]
    fn unix_paths_keep_their_case_and_fold_home_directories() {
        assert_eq!(n("/usr/bin/bash"), "/usr/bin/bash");
        assert_eq!(n("/usr//lib/Some.so"), "/usr/lib/Some.so");
        assert_eq!(n("/home/alice/.local/bin/x"), "/home/*/.local/bin/x");
        assert_eq!(
            user_writable_location("/tmp/.x/kworker"),
            Some("a temporary directory")
        );
        assert_eq!(
            user_writable_location("/dev/shm/x"),
            Some("a temporary directory")
        );
        assert_eq!(
            user_writable_location("/home/*/.local/bin/x"),
            Some("a user's home")
        );
        assert_eq!(user_writable_location("/usr/bin/bash"), None);
        assert_eq!(file_name("/usr/bin/bash"), "bash");
    }

    #[test]
    fn user_writable_locations_are_named() {
        let cases = [
            (
                "c:\\users\\*\\appdata\\roaming\\x.exe",
                Some("a user's AppData"),
            ),
            ("c:\\users\\public\\x.exe", Some("the Public profile")),
            ("c:\\windows\\temp\\x.exe", Some("a temporary directory")),
            (
                "c:\\users\\*\\appdata\\local\\temp\\x.exe",
                Some("a user's AppData"),
            ),
            ("c:\\programdata\\x\\y.exe", Some("ProgramData")),
            ("c:\\$recycle.bin\\s-1-5\\x.exe", Some("the recycle bin")),
            ("c:\\users\\*\\downloads\\x.exe", Some("a user profile")),
            ("c:\\perflogs\\x.exe", Some("PerfLogs")),
            ("c:\\windows\\system32\\cmd.exe", None),
            ("c:\\program files\\vendor\\temp.exe", None),
            ("c:\\temp.exe", None),
        ];
        for (image, expected) in cases {
            assert_eq!(user_writable_location(image), expected, "{image}");
        }
        assert_eq!(file_name("c:\\windows\\x.exe"), "x.exe");
        assert_eq!(file_name("x.exe"), "x.exe");
    }

    #[test]
    fn hosts_compare_by_short_name() {
        assert_eq!(normalise_host("WS01.corp.example").as_deref(), Some("ws01"));
        assert_eq!(normalise_host("ws01").as_deref(), Some("ws01"));
        assert_eq!(normalise_host("ws01.").as_deref(), Some("ws01"));
        assert_eq!(normalise_host("10.1.2.3").as_deref(), Some("10.1.2.3"));
        assert_eq!(normalise_host(" - "), None);
        assert_eq!(normalise_host(""), None);
        assert_eq!(normalise_host(" .. "), None);
    }

    #[test]
    fn a_memo_computes_each_input_once_and_stays_bounded() {
        let mut memo = Memo::default();
        let computed = std::cell::Cell::new(0);
        let get = |memo: &mut Memo<Option<usize>>, raw: &str| {
            memo.get(raw, |raw| {
                computed.set(computed.get() + 1);
                normalise_image(raw).map(|image| image.len())
            })
        };
        assert_eq!(get(&mut memo, "C:/Tools/x.exe"), Some(14));
        assert_eq!(get(&mut memo, "  "), None);
        assert_eq!(get(&mut memo, "C:/Tools/x.exe"), Some(14));
        assert_eq!(get(&mut memo, "  "), None);
        assert_eq!(
            (memo.len(), computed.get()),
            (2, 2),
            "misses are cached too"
        );
        for i in 0..MAX_MEMO_ENTRIES + 10 {
            get(&mut memo, &format!("C:\\Temp\\{i}.exe"));
        }
        assert_eq!(memo.len(), MAX_MEMO_ENTRIES);
        assert_eq!(computed.get(), MAX_MEMO_ENTRIES + 12);
        // Inputs beyond the bound are computed every time, and right.
        assert_eq!(get(&mut memo, "C:\\Temp\\x\\y.exe"), Some(15));
        assert_eq!(get(&mut memo, "C:\\Temp\\x\\y.exe"), Some(15));
        assert_eq!(computed.get(), MAX_MEMO_ENTRIES + 14);
        assert_eq!(get(&mut memo, "C:/Tools/x.exe"), Some(14));
    }
}
