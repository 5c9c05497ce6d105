//! The wasm build of the module (from the bundle), run in the worker's
//! sandbox over generated shards: a working day of Windows Security and
//! System events from a domain (machine-account logons to the DC, users on
//! the file server, SYSVOL/NETLOGON and named-pipe access, admins' RDP
//! sessions to two servers, ordinary service installs), with and without a
//! planted PsExec-style intrusion, and with a software-deployment server
//! that touches every workstation.

use quarry_hunt_modules::LATERAL_MOVEMENT;
use quarry_module_testkit::{self as testkit, Rng, evidence as ev};
use quarry_sdk::time::format_rfc3339_ms;
use quarry_worker::runtime::TaskOutput;
use quarry_worker::runtime::types::Severity;
use serde_json::{Value, json};

/// 2024-03-04T08:00:00Z.
const START_MS: i64 = 1_709_539_200_000;
const MINUTE: i64 = 60_000;
const ATTACKER: &str = "10.20.1.44";
const DEPLOY_SERVER: &str = "10.20.0.30";
const WORKSTATIONS: u32 = 25;
fn ws_ip(i: u32) -> String {
    format!("10.20.1.{}", 10 + i)
}

fn ws_name(i: u32) -> String {
    format!("WS{:02}.corp.example", i + 1)
}

fn logon(t: i64, computer: &str, ip: &str, user: &str, logon_type: u32) -> Value {
    json!({
        "@timestamp": format_rfc3339_ms(t),
        "EventID": 4624,
        "Channel": "Security",
        "Computer": computer,
        "TargetUserName": user,
        "TargetDomainName": "CORP",
        "LogonType": logon_type,
        "IpAddress": ip,
        "IpPort": "50123",
        "WorkstationName": "-",
        "LogonProcessName": "NtLmSsp",
        "AuthenticationPackageName": "NTLM",
    })
}

fn share(
    t: i64,
    id: u32,
    computer: &str,
    ip: &str,
    user: &str,
    share: &str,
    target: Option<&str>,
) -> Value {
    let mut e = json!({
        "@timestamp": format_rfc3339_ms(t),
        "EventID": id,
        "Channel": "Security",
        "Computer": computer,
        "SubjectUserName": user,
        "SubjectDomainName": "CORP",
        "IpAddress": ip,
        "IpPort": "50124",
        "ShareName": format!("\\\\*\\{share}"),
        "AccessMask": "0x1",
    });
    if let Some(target) = target {
        e["RelativeTargetName"] = json!(target);
    }
    e
}

fn service(t: i64, computer: &str, name: &str, image: &str) -> Value {
    json!({
        "@timestamp": format_rfc3339_ms(t),
        "EventID": 7045,
        "Channel": "System",
        "Computer": computer,
        "ServiceName": name,
        "ImagePath": image,
        "ServiceType": "user mode service",
        "StartType": "demand start",
        "AccountName": "LocalSystem",
    })
}

fn domain_day(rng: &mut Rng) -> Vec<Value> {
    let mut events = Vec::new();
    let dc = "DC01.corp.example";
    let fs = "SRV-FS01.corp.example";
    for i in 0..WORKSTATIONS {
        let ip = ws_ip(i);
        let user = format!("user{i:02}");
        let mut t = START_MS + rng.below(10 * MINUTE as u64) as i64;
        while t < START_MS + 9 * 60 * MINUTE {
            match rng.below(6) {
                // The workstation's machine account and the user on the DC.
                0 => events.push(logon(t, dc, &ip, &format!("WS{:02}$", i + 1), 3)),
                1 => {
                    events.push(logon(t, dc, &ip, &user, 3));
                    events.push(share(t + 50, 5140, dc, &ip, &user, "SYSVOL", None));
                    events.push(share(t + 60, 5145, dc, &ip, &user, "IPC$", Some("lsarpc")));
                }
                // The user on the file server's department share.
                2 | 3 => {
                    events.push(logon(t, fs, &ip, &user, 3));
                    events.push(share(t + 40, 5140, fs, &ip, &user, "Departments", None));
                    events.push(share(t + 45, 5145, fs, &ip, &user, "IPC$", Some("srvsvc")));
                }
                // Anonymous and local noise.
                4 => events.push(logon(t, &ws_name(i), "-", "ANONYMOUS LOGON", 3)),
                _ => events.push(logon(t, &ws_name(i), "127.0.0.1", &user, 3)),
            }
            t += 2 * MINUTE + rng.below(30 * MINUTE as u64) as i64;
        }
    }
    // Two admins' RDP sessions to two servers each.
    for (k, admin_ip) in ["10.20.2.5", "10.20.2.6"].iter().enumerate() {
        for (j, server) in ["SRV-APP01.corp.example", "SRV-DB01.corp.example"]
            .iter()
            .enumerate()
        {
            let t = START_MS + (60 + 90 * k as i64 + 20 * j as i64) * MINUTE;
            events.push(logon(t, server, admin_ip, &format!("adm{k}"), 10));
        }
    }
    // Ordinary services installed by updates.
    events.push(service(
        START_MS + 200 * MINUTE,
        fs,
        "WdNisSvc",
        "\"C:\\ProgramData\\Microsoft\\Windows Defender\\platform\\4.18.2\\NisSrv.exe\"",
    ));
    events.push(service(
        START_MS + 210 * MINUTE,
        &ws_name(3),
        "PrinterDriverHost",
        "C:\\Windows\\System32\\spoolsv.exe",
    ));
    events
}

/// From a compromised workstation: PsExec to two servers, then network
/// logons to four more workstations (enumerating shares with stolen
/// credentials).
fn intrusion() -> Vec<Value> {
    let mut events = Vec::new();
    let mut t = START_MS + 300 * MINUTE;
    for server in ["SRV-FS01.corp.example", "SRV-DB01.corp.example"] {
        events.push(logon(t, server, ATTACKER, "svc_backup", 3));
        events.push(share(
            t + 100,
            5140,
            server,
            ATTACKER,
            "svc_backup",
            "ADMIN$",
            None,
        ));
        events.push(share(
            t + 150,
            5145,
            server,
            ATTACKER,
            "svc_backup",
            "ADMIN$",
            Some("PSEXESVC.exe"),
        ));
        events.push(share(
            t + 200,
            5145,
            server,
            ATTACKER,
            "svc_backup",
            "IPC$",
            Some("svcctl"),
        ));
        events.push(service(
            t + 300,
            server,
            "PSEXESVC",
            "%SystemRoot%\\PSEXESVC.exe",
        ));
        events.push(share(
            t + 400,
            5145,
            server,
            ATTACKER,
            "svc_backup",
            "IPC$",
            Some("PSEXESVC-WS35-4242-stdin"),
        ));
        t += 7 * MINUTE;
    }
    for i in [2, 5, 8, 13] {
        events.push(logon(t, &ws_name(i), ATTACKER, "svc_backup", 3));
        t += 2 * MINUTE;
    }
    events
}

/// A software-deployment server pushing an agent: ADMIN$ and a service on
/// every workstation, benign but indistinguishable from PsExec by events.
fn deployment() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..WORKSTATIONS {
        let t = START_MS + (30 + i as i64) * MINUTE;
        let ws = ws_name(i);
        events.push(logon(t, &ws, DEPLOY_SERVER, "svc_deploy", 3));
        events.push(share(
            t + 100,
            5140,
            &ws,
            DEPLOY_SERVER,
            "svc_deploy",
            "ADMIN$",
            None,
        ));
        events.push(service(
            t + 300,
            &ws,
            "ccmsetup",
            "\\\\SRV-DEPLOY\\Client$\\ccmsetup.exe",
        ));
    }
    events
}

fn shard(planted: bool, with_deployment: bool) -> Vec<Value> {
    let mut rng = Rng(0x1a7e_4a11);
    let mut events = domain_day(&mut rng);
    if planted {
        events.extend(intrusion());
    }
    if with_deployment {
        events.extend(deployment());
    }
    events.sort_by_key(|e| e["@timestamp"].as_str().unwrap().to_owned());
    events
}

fn run(events: &[Value], params: &[(&str, &str)]) -> TaskOutput {
    let shard = testkit::shard_of_events("domain", "windows-domain", events);
    let output = testkit::run(LATERAL_MOVEMENT.wasm, &shard, params);
    assert_eq!(output.events_scanned, events.len() as u64);
    output
}

fn summary(output: &TaskOutput) -> Vec<(&str, &str, Option<&str>)> {
    output
        .findings
        .iter()
        .map(|f| (f.rule.as_str(), f.entity.as_str(), ev(f, "destination")))
        .collect()
}

#[test]
fn planted_psexec_and_fanout_are_found() {
    let output = run(&shard(true, false), &[]);
    assert_eq!(
        summary(&output),
        [
            (
                "lateral-movement/remote-service",
                "ip:10.20.1.44",
                Some("srv-db01.corp.example")
            ),
            (
                "lateral-movement/remote-service",
                "ip:10.20.1.44",
                Some("srv-fs01.corp.example")
            ),
            (
                "lateral-movement/remote-logon-fanout",
                "ip:10.20.1.44",
                None
            ),
        ],
        "{:#?}",
        output.findings
    );
    let fs = &output.findings[1];
    assert_eq!(fs.severity, Severity::High);
    assert_eq!(ev(fs, "users"), Some("CORP\\svc_backup"));
    assert_eq!(ev(fs, "shares"), Some("ADMIN$, IPC$"));
    assert_eq!(
        ev(fs, "services"),
        Some("PSEXESVC (%SystemRoot%\\PSEXESVC.exe)")
    );
    assert_eq!(ev(fs, "remote_logons"), Some("1"));
    assert!(fs.techniques.contains(&"T1569.002".to_owned()));
    assert!(fs.techniques.contains(&"T1021.002".to_owned()));
    assert!(fs.techniques.contains(&"T1570".to_owned()));
    let fanout = &output.findings[2];
    assert_eq!(ev(fanout, "destination_count"), Some("6"));
}

#[test]
fn ordinary_domain_activity_is_quiet() {
    let output = run(&shard(false, false), &[]);
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
    assert!(output.events_matched > 500);
}

#[test]
fn a_deployment_server_is_reported_until_it_is_ignored() {
    let events = shard(false, true);
    let output = run(&events, &[]);
    let deploy = output
        .findings
        .iter()
        .filter(|f| f.entity == format!("ip:{DEPLOY_SERVER}"))
        .count();
    // One remote-service finding per workstation plus the fan-out.
    assert_eq!(deploy, WORKSTATIONS as usize + 1);
    assert_eq!(output.findings.len(), deploy);
    // Ignored, the server's access and the installs attributed to it go.
    let output = run(&events, &[("ignore_sources", DEPLOY_SERVER)]);
    assert!(output.findings.is_empty(), "{:#?}", output.findings);
}
