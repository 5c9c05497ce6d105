//! Routine activity (the background the intrusions hide in) and the benign
//! look-alikes that a naive system escalates.

use super::emit::{From, Gen, Proc, Session, Who, digest_hex, sha256_of};
use super::lookalike as la;
use super::out::Label;
use super::world::{
    AV_LOOKUP_ZONE, Account, BROWSED, CI_IP, CRL_SITES, DAY, GUESSED_USERS, HOSTS, HOUR,
    INTERNET_SCANNERS, MAINTAINED_SERVERS, MINUTE, MONITORING, OFFSITE_BACKUP, OS_SERVICES, PEOPLE,
    Role, SCANNER_IP, SECOND, Site, UPSTREAM_DNS, VENDOR_UPDATES, host, hosts_with, person,
    windows_hosts, workstation_of,
};

/// Chrome's user agent in the HTTP requests the sensor sees.
pub(crate) const CHROME_UA: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
/// Windows' own certificate checks.
const CRYPTOAPI_UA: &str = "Microsoft-CryptoAPI/10.0";
/// PowerShell's `Invoke-WebRequest`.
pub(crate) const POWERSHELL_UA: &str =
    "Mozilla/5.0 (Windows NT; Windows NT 10.0; en-US) WindowsPowerShell/5.1.17763.6414";

/// Background processes Windows starts by itself: (image, command line).
const SYSTEM_PROCS: &[(&str, &str)] = &[
    ("C:\\Windows\\System32\\taskhostw.exe", "taskhostw.exe"),
    (
        "C:\\Windows\\System32\\backgroundTaskHost.exe",
        "\"C:\\Windows\\system32\\backgroundTaskHost.exe\" -ServerName:BackgroundTaskHost.WebAccountProvider",
    ),
    (
        "C:\\Windows\\System32\\SearchProtocolHost.exe",
        "\"C:\\Windows\\system32\\SearchProtocolHost.exe\" Global\\UsGthrFltPipeMssGthrPipe1_ Global\\UsGthrCtrlFltPipeMssGthrPipe1 1 -2147483646 \"Software\\Microsoft\\Windows Search\"",
    ),
    (
        "C:\\Windows\\System32\\wbem\\WmiPrvSE.exe",
        "C:\\Windows\\system32\\wbem\\wmiprvse.exe -Embedding",
    ),
    (
        "C:\\Windows\\System32\\dllhost.exe",
        "C:\\Windows\\system32\\DllHost.exe /Processid:{AB8902B4-09CA-4BB6-B78D-A8F59079A8D5}",
    ),
    (
        "C:\\Windows\\System32\\CompatTelRunner.exe",
        "C:\\Windows\\system32\\compattelrunner.exe -m:appraiser.dll -f:DoScheduledTelemetryRun",
    ),
    (
        "C:\\Windows\\System32\\sppsvc.exe",
        "C:\\Windows\\system32\\sppsvc.exe",
    ),
    (
        "C:\\Windows\\System32\\MusNotification.exe",
        "C:\\Windows\\system32\\MusNotification.exe",
    ),
    (
        "C:\\Windows\\System32\\wuauclt.exe",
        "\"C:\\Windows\\system32\\wuauclt.exe\" /RunHandlerComServer",
    ),
    (
        "C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MpCmdRun.exe",
        "\"C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\MpCmdRun.exe\" -wdenable",
    ),
    (
        "C:\\Windows\\System32\\gpupdate.exe",
        "gpupdate.exe /target:computer",
    ),
    (
        "C:\\Windows\\System32\\sc.exe",
        "C:\\Windows\\system32\\sc.exe start wuauserv",
    ),
    (
        "C:\\Windows\\System32\\WUDFHost.exe",
        "\"C:\\Windows\\System32\\WUDFHost.exe\" -HostGUID:{193a1820-d9ac-4997-8c55-be817523f6aa} -IoEventPortName:\\UMDFCommunicationPorts\\WUDF\\HostProcess-00000001",
    ),
];

/// Services that start and stop on their own (System 7036).
const SERVICES: &[&str] = &[
    "Windows Update",
    "Background Intelligent Transfer Service",
    "WinHTTP Web Proxy Auto-Discovery Service",
    "Delivery Optimization",
    "Windows Modules Installer",
    "Microsoft Store Install Service",
    "Software Protection",
    "Windows Defender Antivirus Network Inspection Service",
    "Device Setup Manager",
    "Network List Service",
];

const REGISTRY_KEYS: &[(&str, &str)] = &[
    (
        "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\WindowsUpdate\\Auto Update\\LastOnlineScanTimeForAppCategory\\{AD1DF4C6-4A2D-4B6F-9E1B-4CD5C2E0F5B4}",
        "Binary Data",
    ),
    (
        "HKLM\\System\\CurrentControlSet\\Services\\bam\\State\\UserSettings\\S-1-5-18\\\\Device\\HarddiskVolume3\\Windows\\System32\\svchost.exe",
        "Binary Data",
    ),
    (
        "HKLM\\SOFTWARE\\Microsoft\\Windows Defender\\Signature Updates\\SignaturesLastUpdated",
        "Binary Data",
    ),
    (
        "HKLM\\SYSTEM\\CurrentControlSet\\Services\\W32Time\\Config\\LastKnownGoodTime",
        "QWORD (0x01db3a6c-0x5f0e1a00)",
    ),
    (
        "HKLM\\SOFTWARE\\Microsoft\\SMS\\Mobile Client\\Software Distribution\\State\\LastPolicyEvaluation",
        "DWORD (0x00000001)",
    ),
    (
        "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Schedule\\TaskCache\\Tree\\Microsoft\\Windows\\UpdateOrchestrator\\Schedule Scan\\Index",
        "DWORD (0x00000003)",
    ),
];

const TEMP_FILES: &[&str] = &[
    "C:\\Windows\\Prefetch\\TASKHOSTW.EXE-3E0A9F3C.pf",
    "C:\\Windows\\Prefetch\\SVCHOST.EXE-FC18C5A8.pf",
    "C:\\Windows\\SoftwareDistribution\\DataStore\\Logs\\tmp.edb",
    "C:\\Windows\\Temp\\MpCmdRun.log",
    "C:\\Windows\\System32\\Tasks\\Microsoft\\Windows\\UpdateOrchestrator\\Schedule Scan",
    "C:\\ProgramData\\Microsoft\\Windows\\DeviceMetadataCache\\dmrc.idx",
];

/// The Configuration Manager client's scripts (decoded): what they do and
/// the text `-EncodedCommand` carries.
const SCCM_SCRIPTS: &[&str] = &[
    "$ErrorActionPreference='Stop'; Get-CimInstance -ClassName Win32_QuickFixEngineering | Select-Object HotFixID,InstalledOn | ConvertTo-Json -Compress",
    "$v = Get-BitLockerVolume -MountPoint 'C:'; if ($v.ProtectionStatus -eq 'On') { 'Compliant' } else { 'NonCompliant' }",
    "Get-ItemProperty 'HKLM:\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\*' | Where-Object DisplayName | Select-Object DisplayName,DisplayVersion,Publisher | ConvertTo-Json -Compress",
    "$s = Get-Service -Name CcmExec,WinRM,BITS,wuauserv | Select-Object Name,Status,StartType; $s | ConvertTo-Json -Compress",
];

/// `-EncodedCommand`'s argument for a script: base64 of its UTF-16LE text.
pub(crate) fn encode_command(script: &str) -> String {
    let bytes: Vec<u8> = script.encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64(&bytes)
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn scale(n: i64, noise: u32) -> i64 {
    (n * i64::from(noise) + 50) / 100
}

/// Linux accounts that exist on the web servers.
const LINUX_USERS: &[&str] = &["root", "deploy", "ubuntu", "www-data", "nessus", "backup"];

impl Gen {
    fn site(&mut self) -> Site {
        // The CDN edge is embedded in many pages, so it is loaded often.
        if self.rng.percent(9) {
            return BROWSED[BROWSED.len() - 1];
        }
        *self.rng.pick(&BROWSED[..BROWSED.len() - 1])
    }

    fn dc(&mut self) -> usize {
        if self.rng.percent(65) {
            host("DC01")
        } else {
            host("DC02")
        }
    }

    // ==================================================================
    // Background
    // ==================================================================

    /// A week of routine activity, `noise` percent of the default amount.
    pub(crate) fn background(&mut self, noise: u32) {
        for h in windows_hosts() {
            self.reseed(&format!("system:{}", HOSTS[h].name));
            self.windows_system(h, noise);
        }
        for ws in hosts_with(Role::Workstation) {
            self.reseed(&format!("workday:{}", HOSTS[ws].name));
            self.workdays(ws, noise);
        }
        self.reseed("dc");
        self.domain_controllers(noise);
        self.reseed("servers");
        self.servers(noise);
        for web in hosts_with(Role::WebServer) {
            self.reseed(&format!("linux:{}", HOSTS[web].name));
            self.linux(web, noise);
        }
    }

    /// What every Windows host does by itself: background processes,
    /// service state changes, registry and file writes, Defender's looks at
    /// LSASS, update and certificate checks, group policy refreshes, the
    /// management agent's policy polls.
    fn windows_system(&mut self, h: usize, noise: u32) {
        let procs = self.procs(h);
        let server = HOSTS[h].role.is_server();
        let system = Who::system(h);
        for d in 0..self.days {
            let day = self.day(d);
            let busy = server || Self::weekday(d);
            let n = scale(
                if server {
                    30
                } else if busy {
                    55
                } else {
                    20
                },
                noise,
            );
            for _ in 0..n {
                let t = day + self.rng.range(0, DAY - MINUTE);
                let &(image, cmd) = self.rng.pick(SYSTEM_PROCS);
                let child = self.spawn(h, t, &procs.svchost, image, cmd, &system);
                let end = t + self.rng.range(SECOND, 3 * MINUTE);
                self.exit(h, end, &child);
            }
            for _ in 0..scale(8, noise) {
                let t = day + self.rng.range(0, DAY - HOUR);
                let name = *self.rng.pick(SERVICES);
                self.service_state(h, t, name, true);
                let stop = t + self.rng.range(MINUTE, 30 * MINUTE);
                self.service_state(h, stop, name, false);
            }
            for _ in 0..scale(15, noise) {
                let t = day + self.rng.range(0, DAY);
                let &(key, details) = self.rng.pick(REGISTRY_KEYS);
                self.registry_set(h, t, &procs.svchost, key, details);
            }
            for _ in 0..scale(15, noise) {
                let t = day + self.rng.range(0, DAY);
                let path = *self.rng.pick(TEMP_FILES);
                self.file_created(h, t, &procs.svchost, path);
            }
            // Defender reads LSASS (query access): routine, and the
            // access mask the credential-dumping rules leave alone.
            for _ in 0..2 {
                let t = day + self.rng.range(0, DAY);
                self.process_access(h, t, &procs.defender, &procs.lsass, "0x1010", "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\KERNELBASE.dll+2bcbe|C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24090.11-0\\mpsvc.dll+1a3d12|C:\\Windows\\System32\\KERNEL32.DLL+17374|C:\\Windows\\SYSTEM32\\ntdll.dll+4cc91");
            }
            for _ in 0..scale(if busy { 12 } else { 8 }, noise) {
                let t = day + self.rng.range(0, DAY - MINUTE);
                let site = *self.rng.pick(OS_SERVICES);
                self.lookup(h, t, &procs.svchost, site.name, Some(site.ip), true);
                let out = self.rng.range(800, 6000) as u64;
                let inn = self.rng.range(2000, 400_000) as u64;
                let dur = self.rng.range(300, 20_000);
                self.connect(
                    h,
                    t + 30,
                    &procs.svchost,
                    site.ip,
                    443,
                    Some(site.name),
                    Some(("ssl", out, inn, dur)),
                );
            }
            for _ in 0..scale(4, noise) {
                let t = day + self.rng.range(0, DAY - MINUTE);
                let site = *self.rng.pick(CRL_SITES);
                let path = format!(
                    "/msdownload/update/v3/static/trustedr/en/disallowedcertstl.cab?{:x}",
                    self.rng.below(1 << 40)
                );
                self.connect(h, t, &procs.svchost, site.ip, 80, Some(site.name), None);
                let len = self.rng.range(800, 9000) as u64;
                self.zhttp(
                    t,
                    HOSTS[h].ip,
                    site.ip,
                    80,
                    "GET",
                    site.name,
                    &path,
                    Some(CRYPTOAPI_UA),
                    200,
                    len,
                    Some("application/vnd.ms-cab-compressed"),
                );
            }
            // Group policy refresh: the computer account reads SYSVOL on a
            // domain controller every four hours or so.
            let mut t = day + self.rng.range(0, 4 * HOUR);
            while t < day + DAY {
                if HOSTS[h].role != Role::DomainController || self.rng.percent(30) {
                    let dc = self.dc();
                    let machine = Account::machine(h);
                    let from = From {
                        ip: HOSTS[h].ip,
                        workstation: "",
                    };
                    let session = self.rng.range(SECOND, 4 * SECOND);
                    let lid = self.logon(dc, t, &machine, 3, from, Some(session));
                    self.share_access(
                        dc,
                        t + 200,
                        &machine,
                        &lid,
                        HOSTS[h].ip,
                        "SYSVOL",
                        None,
                        false,
                    );
                    self.tgs(
                        dc,
                        t - 150,
                        &machine,
                        &format!("{}$", HOSTS[dc].name),
                        &Account::machine(dc).sid,
                        HOSTS[h].ip,
                        "0x12",
                    );
                }
                t += 4 * HOUR + self.rng.range(-30 * MINUTE, 30 * MINUTE);
            }
            // Management agent policy poll.
            let mut t = day + self.rng.range(0, 4 * HOUR);
            while t < day + DAY {
                let out = self.rng.range(1500, 4000) as u64;
                let inn = self.rng.range(3000, 60_000) as u64;
                self.connect(
                    h,
                    t,
                    &procs.ccmexec,
                    "10.10.5.50",
                    443,
                    Some("sccm01.corp.local"),
                    Some(("ssl", out, inn, 800)),
                );
                t += 4 * HOUR + self.rng.range(-20 * MINUTE, 20 * MINUTE);
            }
        }
    }

    /// A workstation owner's weekdays: logon, applications, browsing, mail,
    /// file shares, the intranet, screen locks, logoff.
    fn workdays(&mut self, ws: usize, noise: u32) {
        let Some(p) = HOSTS[ws].owner else {
            return;
        };
        let account = Account::person(p);
        let ip = HOSTS[ws].ip;
        let name = HOSTS[ws].name;
        for d in 0..self.days {
            if !Self::weekday(d) {
                continue;
            }
            let day = self.day(d);
            let start =
                day + PEOPLE[p].arrives_min * MINUTE + self.rng.range(-15 * MINUTE, 20 * MINUTE);
            let end =
                day + PEOPLE[p].leaves_min * MINUTE + self.rng.range(-20 * MINUTE, 30 * MINUTE);
            let dc = self.dc();
            self.tgt(dc, start - 900, &account, ip);
            self.tgs(
                dc,
                start - 700,
                &account,
                &format!("{name}$"),
                &Account::machine(ws).sid,
                ip,
                "0x12",
            );
            let logon_id = self.logon_id();
            let local = From {
                ip: "127.0.0.1",
                workstation: name,
            };
            self.logon_with(
                ws,
                start,
                &account,
                2,
                local,
                Some(end - start),
                &logon_id,
                None,
            );
            self.security(
                ws,
                end - 1500,
                4647,
                true,
                12545,
                vec![
                    ("TargetUserSid", account.sid.clone().into()),
                    ("TargetUserName", account.name.clone().into()),
                    ("TargetDomainName", super::world::DOMAIN.into()),
                    ("TargetLogonId", logon_id.clone().into()),
                ],
            );
            let who = Who::account(&account, &logon_id, "Medium");
            let userinit = self.resident(
                ws,
                "C:\\Windows\\System32\\userinit.exe",
                "C:\\Windows\\system32\\userinit.exe",
                who.clone(),
            );
            let explorer = self.spawn(
                ws,
                start + 3 * SECOND,
                &userinit,
                "C:\\Windows\\explorer.exe",
                "C:\\Windows\\Explorer.EXE",
                &who,
            );
            let outlook_at = self.rng.range(20 * SECOND, 3 * MINUTE);
            let outlook = self.spawn(
                ws,
                start + outlook_at,
                &explorer,
                "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
                "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE\" ",
                &who,
            );
            let teams_at = self.rng.range(10 * SECOND, 2 * MINUTE);
            let teams = self.spawn(ws, start + teams_at, &explorer, &format!("C:\\Users\\{}\\AppData\\Local\\Microsoft\\WindowsApps\\MSTeams_8wekyb3d8bbwe\\ms-teams.exe", account.name), "\"ms-teams.exe\" --system-initiated", &who);
            let chrome_at = self.rng.range(MINUTE, 8 * MINUTE);
            let chrome = self.spawn(
                ws,
                start + chrome_at,
                &explorer,
                "C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe",
                "\"C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe\" ",
                &who,
            );
            let onedrive_at = self.rng.range(5 * SECOND, 40 * SECOND);
            self.spawn(
                ws,
                start + onedrive_at,
                &explorer,
                &format!(
                    "C:\\Users\\{}\\AppData\\Local\\Microsoft\\OneDrive\\OneDrive.exe",
                    account.name
                ),
                "\"C:\\Program Files\\Microsoft OneDrive\\OneDrive.exe\" /background",
                &who,
            );
            self.sessions.push(Session {
                host: ws,
                person: p,
                day: d,
                start,
                end,
                logon_id: logon_id.clone(),
                who: who.clone(),
                explorer: explorer.clone(),
                outlook: outlook.clone(),
                chrome: chrome.clone(),
            });
            let busy_from = start + 5 * MINUTE;
            let busy_to = end - 5 * MINUTE;
            // Browsing.
            let visits = scale(self.rng.range(60, 130), noise);
            for _ in 0..visits {
                let t = self.between(busy_from, busy_to);
                let site = self.site();
                let previous = self.label;
                if site.ip == "203.0.113.80" {
                    self.label = Label::LookAlike(la::STALE_INTEL);
                }
                if self.rng.percent(60) {
                    self.lookup(ws, t - 40, &chrome, site.name, Some(site.ip), true);
                }
                let out = self.rng.range(900, 8000) as u64;
                let inn = self.rng.range(4000, 900_000) as u64;
                let dur = self.rng.range(200, 90_000);
                self.connect(
                    ws,
                    t,
                    &chrome,
                    site.ip,
                    443,
                    Some(site.name),
                    Some(("ssl", out, inn, dur)),
                );
                self.label = previous;
            }
            // Mail and chat.
            for _ in 0..scale(15, noise) {
                let t = self.between(busy_from, busy_to);
                let (p_, site) = if self.rng.percent(50) {
                    (&outlook, BROWSED[0])
                } else {
                    (&teams, BROWSED[2])
                };
                let p_ = p_.clone();
                let out = self.rng.range(2000, 30_000) as u64;
                let inn = self.rng.range(5000, 2_000_000) as u64;
                let duration = self.rng.range(500, 600_000);
                self.connect(
                    ws,
                    t,
                    &p_,
                    site.ip,
                    443,
                    Some(site.name),
                    Some(("ssl", out, inn, duration)),
                );
            }
            // Documents.
            for _ in 0..scale(self.rng.range(2, 8), noise) {
                let t = self.between(busy_from, busy_to);
                let (image, doc) = if self.rng.percent(50) {
                    (
                        "C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE",
                        format!(
                            "C:\\Users\\{}\\Documents\\Budget-Q{}.xlsx",
                            account.name,
                            1 + self.rng.below(4)
                        ),
                    )
                } else {
                    (
                        "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE",
                        format!(
                            "C:\\Users\\{}\\Documents\\Report-{}.docx",
                            account.name,
                            100 + self.rng.below(900)
                        ),
                    )
                };
                let cmd = format!("\"{image}\" \"{doc}\"");
                let app = self.spawn(ws, t, &explorer, image, &cmd, &who);
                let close = t + self.rng.range(5 * MINUTE, 2 * HOUR);
                self.exit(ws, close.min(busy_to), &app);
            }
            if self.rng.percent(25) {
                let t = self.between(busy_from, busy_to);
                let cmd = self.spawn(
                    ws,
                    t,
                    &explorer,
                    "C:\\Windows\\System32\\cmd.exe",
                    "\"C:\\Windows\\system32\\cmd.exe\" ",
                    &who,
                );
                let typed = self.pause();
                let ping = self.spawn(
                    ws,
                    t + typed,
                    &cmd,
                    "C:\\Windows\\System32\\ipconfig.exe",
                    "ipconfig  /all",
                    &who,
                );
                self.exit(ws, t + 60 * SECOND, &ping);
                let closed_after = self.rng.range(2 * MINUTE, 20 * MINUTE);
                self.exit(ws, t + closed_after, &cmd);
            }
            // Screen locks.
            for _ in 0..self.rng.range(2, 5) {
                let t = self.between(busy_from, busy_to - HOUR);
                self.lock(ws, t, &account, &logon_id, true);
                let back = t + self.rng.range(3 * MINUTE, 55 * MINUTE);
                if self.rng.percent(10) {
                    // A mistyped password at the lock screen.
                    let previous = self.label;
                    self.label = Label::LookAlike(la::USER_TYPOS);
                    self.failed_logon(ws, back - 9 * SECOND, &account.name, 7, local, false);
                    let dc = self.dc();
                    self.preauth_failed(dc, back - 9 * SECOND + 120, &account, ip);
                    self.label = previous;
                }
                self.lock(ws, back, &account, &logon_id, false);
                let unlock = self.logon_id();
                let session = self.rng.range(2 * SECOND, 8 * SECOND);
                self.logon_with(ws, back, &account, 7, local, Some(session), &unlock, None);
            }
            // File shares.
            for _ in 0..scale(self.rng.range(3, 8), noise) {
                let t = self.between(busy_from, busy_to);
                let fs = host("FS01");
                let share = *self
                    .rng
                    .pick(&["Shared", "Projects", "Users", "Finance", "HR"]);
                let dc = self.dc();
                self.tgs(
                    dc,
                    t - 120,
                    &account,
                    "FS01$",
                    &Account::machine(fs).sid,
                    ip,
                    "0x12",
                );
                let session = self.rng.range(MINUTE, 2 * HOUR);
                let lid = self.logon(
                    fs,
                    t,
                    &account,
                    3,
                    From {
                        ip,
                        workstation: name,
                    },
                    Some(session),
                );
                self.share_access(fs, t + 150, &account, &lid, ip, share, None, false);
                let out = self.rng.range(5000, 3_000_000) as u64;
                let inn = self.rng.range(20_000, 50_000_000) as u64;
                self.zconn(
                    t,
                    ip,
                    "10.10.5.20",
                    445,
                    "tcp",
                    "smb,gssapi",
                    out,
                    inn,
                    session.min(20 * MINUTE),
                    "SF",
                );
                if self.rng.percent(12) {
                    // A mistyped password when mapping a drive by hand.
                    let previous = self.label;
                    self.label = Label::LookAlike(la::USER_TYPOS);
                    self.failed_logon(
                        fs,
                        t - 20 * SECOND,
                        &account.name,
                        3,
                        From {
                            ip,
                            workstation: name,
                        },
                        false,
                    );
                    self.label = previous;
                }
            }
        }
    }

    /// Domain controllers: service tickets for people and machines,
    /// replication, NTLM validations for the old printer.
    fn domain_controllers(&mut self, noise: u32) {
        let services: Vec<(String, String)> = vec![
            ("FS01$".into(), Account::machine(host("FS01")).sid),
            ("DC01$".into(), Account::machine(host("DC01")).sid),
            ("SQL01$".into(), Account::machine(host("SQL01")).sid),
            ("svc_web".into(), Account::service("svc_web").sid),
            ("SCCM01$".into(), Account::machine(host("SCCM01")).sid),
        ];
        let dc1 = host("DC01");
        let dc2 = host("DC02");
        for d in 0..self.days {
            let day = self.day(d);
            if Self::weekday(d) {
                for p in 0..PEOPLE.len() {
                    let account = Account::person(p);
                    let ip = HOSTS[workstation_of(p)].ip;
                    for _ in 0..scale(14, noise) {
                        let t = day + self.rng.range(8 * HOUR, 17 * HOUR);
                        let (service, sid) = self.rng.pick(&services).clone();
                        let dc = self.dc();
                        self.tgs(dc, t, &account, &service, &sid, ip, "0x12");
                    }
                }
            }
            // Computer accounts renew their tickets.
            for h in windows_hosts() {
                for k in 0..3 {
                    let t = day + k * 8 * HOUR + self.rng.range(0, 8 * HOUR);
                    let dc = self.dc();
                    self.tgt(dc, t, &Account::machine(h), HOSTS[h].ip);
                }
            }
            // Replication between the domain controllers.
            let mut t = day + self.rng.range(0, HOUR);
            while t < day + DAY {
                let session = self.rng.range(SECOND, 5 * SECOND);
                self.logon(
                    dc1,
                    t,
                    &Account::machine(dc2),
                    3,
                    From {
                        ip: HOSTS[dc2].ip,
                        workstation: "",
                    },
                    Some(session),
                );
                t += 2 * HOUR + self.rng.range(-10 * MINUTE, 10 * MINUTE);
            }
            // The multifunction printer's scan-to-folder uses NTLM.
            if Self::weekday(d) {
                for _ in 0..scale(20, noise) {
                    let t = day + self.rng.range(8 * HOUR, 17 * HOUR);
                    self.security(
                        dc1,
                        t,
                        4776,
                        true,
                        14336,
                        vec![
                            (
                                "PackageName",
                                "MICROSOFT_AUTHENTICATION_PACKAGE_V1_0".into(),
                            ),
                            ("TargetUserName", "svc_printer".into()),
                            ("Workstation", "PRINT01".into()),
                            ("Status", "0x0".into()),
                        ],
                    );
                }
            }
        }
    }

    /// Servers: the application server's database sessions, the IIS worker,
    /// SQL Server's jobs.
    fn servers(&mut self, noise: u32) {
        let sql = host("SQL01");
        let app = host("APP01");
        let svc_web = Account::service("svc_web");
        for d in 0..self.days {
            let day = self.day(d);
            let (from, to, every) = if Self::weekday(d) {
                (7 * HOUR, 19 * HOUR, 20 * MINUTE)
            } else {
                (0, DAY, 2 * HOUR)
            };
            // Less background, fewer sessions.
            let every = every * 100 / i64::from(noise.max(1));
            let mut t = day + from + self.rng.range(0, every);
            while t < day + to {
                let session = self.rng.range(SECOND, 30 * SECOND);
                self.logon(
                    sql,
                    t,
                    &svc_web,
                    3,
                    From {
                        ip: HOSTS[app].ip,
                        workstation: "APP01",
                    },
                    Some(session),
                );
                let out = self.rng.range(2000, 90_000) as u64;
                let inn = self.rng.range(5000, 4_000_000) as u64;
                self.zconn(
                    t,
                    HOSTS[app].ip,
                    HOSTS[sql].ip,
                    1433,
                    "tcp",
                    "-",
                    out,
                    inn,
                    session,
                    "SF",
                );
                t += every + self.rng.range(-every / 10, every / 10);
            }
            // The intranet application pool recycles at 03:00.
            let t = day + 3 * HOUR + self.rng.range(0, 5 * MINUTE);
            let procs = self.procs(app);
            let who = Who::account(&svc_web, "0x5a2f1c", "High");
            self.spawn(app, t, &procs.services, "C:\\Windows\\System32\\inetsrv\\w3wp.exe", "c:\\windows\\system32\\inetsrv\\w3wp.exe -ap \"IntranetAppPool\" -v \"v4.0\" -l \"webengine4.dll\" -a \\\\.\\pipe\\iisipm8c1e2f -h \"C:\\inetpub\\temp\\apppools\\IntranetAppPool\\IntranetAppPool.config\" -w \"\" -m 0 -t 20 -ta 0", &who);
            // SQL Server agent's nightly maintenance.
            let t = day + 2 * HOUR + self.rng.range(0, 10 * MINUTE);
            let procs = self.procs(sql);
            let agent = Who::account(&Account::service("svc_sql"), "0x3f2a9", "High");
            let job = self.spawn(sql, t, &procs.services, "C:\\Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\Binn\\SQLAGENT.EXE", "\"C:\\Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\Binn\\SQLAGENT.EXE\" -i MSSQLSERVER", &agent);
            self.exit(sql, t + 40 * MINUTE, &job);
        }
    }

    /// A Linux web server's auth.log: cron, the CI deploys, the admin.
    fn linux(&mut self, h: usize, noise: u32) {
        let mut session_no = 300 + self.rng.below(200) as u32;
        for d in 0..self.days {
            let day = self.day(d);
            // Hourly run-parts at :17, the monitoring agent's check every
            // quarter hour, the daily jobs at 06:25.
            for hour in 0..24 {
                let t = day + hour * HOUR + 17 * MINUTE + self.rng.range(0, 900);
                self.cron(
                    h,
                    t,
                    "root",
                    "   cd / && run-parts --report /etc/cron.hourly",
                );
                for quarter in 0..4 {
                    // Less background: a share of the checks is left out.
                    if noise < 100 && !self.rng.percent(u64::from(noise)) {
                        continue;
                    }
                    let t = day + hour * HOUR + quarter * 15 * MINUTE + self.rng.range(0, 900);
                    self.cron(h, t, "root", "/opt/saasmon/bin/saasmon-check --quiet");
                }
            }
            let t = day + 6 * HOUR + 25 * MINUTE + self.rng.range(0, 900);
            self.cron(
                h,
                t,
                "root",
                "test -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }",
            );
            if Self::weekday(d) {
                for _ in 0..scale(3, noise) {
                    let t = day + self.rng.range(9 * HOUR, 18 * HOUR);
                    session_no += 1;
                    self.ci_deploy(h, t, session_no);
                }
                if self.rng.percent(60) {
                    let t = day + self.rng.range(9 * HOUR, 17 * HOUR);
                    session_no += 1;
                    self.admin_ssh(h, t, session_no);
                }
            }
            // systemd's daily timers touch pam too.
            let t = day + self.rng.range(0, DAY);
            let pid = self.linux_pid();
            self.syslog(
                h,
                t,
                "systemd-logind",
                812,
                format!(
                    "Watching system buttons on /dev/input/event{} (Power Button)",
                    pid % 3
                ),
            );
        }
    }

    /// A cron job run: pam session, the command, session closed.
    pub(crate) fn cron(&mut self, h: usize, t: i64, user: &str, command: &str) {
        let pid = self.linux_pid();
        let uid = if user == "root" { 0 } else { 1001 };
        self.syslog(
            h,
            t,
            "CRON",
            pid,
            format!("pam_unix(cron:session): session opened for user {user}(uid={uid}) by (uid=0)"),
        );
        self.syslog(
            h,
            t + 2,
            "CRON",
            pid + 1,
            format!("({user}) CMD ({command})"),
        );
        let close = t + self.rng.range(30, 2500);
        self.syslog(
            h,
            close,
            "CRON",
            pid,
            format!("pam_unix(cron:session): session closed for user {user}"),
        );
    }

    /// An SSH session: accepted key, pam session, logind, commands (sudo
    /// lines), disconnect. Returns the end time.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ssh_session(
        &mut self,
        h: usize,
        t: i64,
        user: &str,
        uid: u32,
        from: &str,
        method: &str,
        session_no: u32,
        sudo: &[&str],
        tty: bool,
    ) -> i64 {
        let pid = self.linux_pid();
        let port = self.rng.range(32768, 60999);
        let auth = match method {
            "publickey" => format!(
                "Accepted publickey for {user} from {from} port {port} ssh2: ED25519 SHA256:{}",
                &base64(digest_hex(&format!("key:{user}:{from}"), 64).as_bytes())[..43]
            ),
            _ => format!("Accepted password for {user} from {from} port {port} ssh2"),
        };
        self.syslog(h, t, "sshd", pid, auth);
        self.syslog(
            h,
            t + 8,
            "sshd",
            pid,
            format!("pam_unix(sshd:session): session opened for user {user}(uid={uid}) by (uid=0)"),
        );
        self.syslog(
            h,
            t + 15,
            "systemd-logind",
            812,
            format!("New session {session_no} of user {user}."),
        );
        let mut now = t + self.rng.range(2 * SECOND, 20 * SECOND);
        for command in sudo {
            let spid = self.linux_pid();
            let tty_part = if tty { "TTY=pts/0 ; " } else { "" };
            self.syslog(
                h,
                now,
                "sudo",
                spid,
                format!("{user} : {tty_part}PWD=/home/{user} ; USER=root ; COMMAND={command}"),
            );
            self.syslog(h, now + 3, "sudo", spid, format!("pam_unix(sudo:session): session opened for user root(uid=0) by {user}(uid={uid})"));
            let done = now + self.rng.range(200, 20 * SECOND);
            self.syslog(
                h,
                done,
                "sudo",
                spid,
                "pam_unix(sudo:session): session closed for user root",
            );
            now = done + self.rng.range(SECOND, 30 * SECOND);
        }
        // A session without sudo is someone working as root (or just
        // looking around): it lasts a while.
        let end = if sudo.is_empty() {
            now + self.rng.range(4 * MINUTE, 35 * MINUTE)
        } else {
            now + self.rng.range(SECOND, 10 * SECOND)
        };
        self.syslog(
            h,
            end,
            "sshd",
            pid,
            format!("Received disconnect from {from} port {port}:11: disconnected by user"),
        );
        self.syslog(
            h,
            end + 2,
            "sshd",
            pid,
            format!("Disconnected from user {user} {from} port {port}"),
        );
        self.syslog(
            h,
            end + 4,
            "sshd",
            pid,
            format!("pam_unix(sshd:session): session closed for user {user}"),
        );
        self.syslog(
            h,
            end + 6,
            "systemd-logind",
            812,
            format!("Session {session_no} logged out. Waiting for processes to exit."),
        );
        self.syslog(
            h,
            end + 9,
            "systemd-logind",
            812,
            format!("Removed session {session_no}."),
        );
        let out = self.rng.range(3000, 40_000) as u64;
        let inn = self.rng.range(3000, 90_000) as u64;
        self.zconn(
            t - 600,
            from,
            HOSTS[h].ip,
            22,
            "tcp",
            "ssh",
            out,
            inn,
            end - t + 600,
            "SF",
        );
        end
    }

    fn ci_deploy(&mut self, h: usize, t: i64, session_no: u32) {
        self.ssh_session(
            h,
            t,
            "deploy",
            1001,
            CI_IP,
            "publickey",
            session_no,
            &[
                "/usr/bin/systemctl reload nginx",
                "/usr/bin/systemctl restart php8.3-fpm",
            ],
            false,
        );
    }

    fn admin_ssh(&mut self, h: usize, t: i64, session_no: u32) {
        let commands: &[&[&str]] = &[
            &["/usr/bin/apt-get update", "/usr/bin/apt-get -y upgrade"],
            &["/usr/bin/journalctl -u nginx --since today"],
            &["/usr/bin/tail -n 200 /var/log/nginx/error.log"],
            &["/usr/bin/systemctl status nginx"],
        ];
        let pick = *self.rng.pick(commands);
        self.ssh_session(
            h,
            t,
            "ubuntu",
            1000,
            "10.10.30.5",
            "publickey",
            session_no,
            pick,
            true,
        );
    }

    // ==================================================================
    // Look-alikes
    // ==================================================================

    /// Every benign look-alike, each labelled for the manifest.
    pub(crate) fn lookalikes(&mut self) {
        type Part = fn(&mut Gen);
        let parts: [(usize, Part); 15] = [
            (la::SCCM_ENCODED_POWERSHELL, Gen::sccm_scripts),
            (la::IT_PSEXEC, Gen::it_psexec),
            (la::VULNERABILITY_SCANNER, Gen::vulnerability_scan),
            (la::BACKUP_JOBS, Gen::backups),
            (la::UPDATER_TASKS, Gen::updater_tasks),
            (la::STALE_PASSWORD, Gen::stale_password),
            (la::USER_TYPOS, |_| {}),
            (la::MONITORING_HEARTBEAT, Gen::monitoring_heartbeat),
            (la::AV_DNS_LOOKUPS, Gen::av_lookups),
            (la::LEGACY_RC4, Gen::legacy_rc4),
            (la::ADMIN_REMOTE_ACCESS, Gen::admin_remote_access),
            (la::SERVICE_ACCOUNT_POLLING, Gen::service_account_polling),
            (la::ADMIN_SCRIPT_DOWNLOADS, Gen::admin_script_downloads),
            (la::STALE_INTEL, |_| {}),
            (la::INTERNET_SSH_NOISE, Gen::internet_ssh_noise),
        ];
        for (index, part) in parts {
            self.reseed(&format!("lookalike:{index}"));
            self.label = Label::LookAlike(index);
            part(self);
        }
        self.label = Label::Noise;
    }

    /// The Configuration Manager client's encoded scripts on every host.
    fn sccm_scripts(&mut self) {
        let slots: [(i64, usize); 5] = [(2, 0), (6, 1), (11, 2), (14, 1), (22, 3)];
        for h in windows_hosts() {
            let procs = self.procs(h);
            let system = Who::system(h);
            let offset = self.rng.range(0, 50 * MINUTE);
            for d in 0..self.days {
                for &(hour, script) in &slots {
                    let t = self.day(d) + hour * HOUR + offset + self.rng.range(0, 5 * MINUTE);
                    let cmd = format!(
                        "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -NoLogo -NonInteractive -NoProfile -ExecutionPolicy Bypass -EncodedCommand {}",
                        encode_command(SCCM_SCRIPTS[script])
                    );
                    let ps = self.spawn(
                        h,
                        t,
                        &procs.ccmexec,
                        "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
                        &cmd,
                        &system,
                    );
                    let conhost = self.spawn(
                        h,
                        t + 40,
                        &ps,
                        "C:\\Windows\\System32\\conhost.exe",
                        "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
                        &system,
                    );
                    let end = t + self.rng.range(2 * SECOND, 9 * SECOND);
                    self.exit(h, end, &conhost);
                    self.exit(h, end + 20, &ps);
                }
            }
        }
    }

    /// What a PsExec run leaves on its target: the network logon, ADMIN$
    /// and svcctl access, the PSEXESVC service, its pipes and the command
    /// it runs. Used by the IT team's maintenance and by the intrusion.
    /// Returns the process the command runs as.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn psexec_target(
        &mut self,
        target: usize,
        t: i64,
        account: &Account,
        source_ip: &str,
        source_host: &str,
        ntlm: bool,
        copied: Option<&str>,
        command: &str,
    ) -> (Proc, i64) {
        let lid = self.logon_id();
        let session = self.rng.range(20 * SECOND, 3 * MINUTE);
        self.logon_with(
            target,
            t,
            account,
            3,
            From {
                ip: source_ip,
                workstation: source_host,
            },
            Some(session),
            &lid,
            Some(ntlm),
        );
        self.share_access(
            target,
            t + 300,
            account,
            &lid,
            source_ip,
            "ADMIN$",
            None,
            false,
        );
        self.share_access(
            target,
            t + 420,
            account,
            &lid,
            source_ip,
            "ADMIN$",
            Some("PSEXESVC.exe"),
            true,
        );
        if let Some(file) = copied {
            self.share_access(
                target,
                t + 700,
                account,
                &lid,
                source_ip,
                "ADMIN$",
                Some(file),
                true,
            );
        }
        self.share_access(
            target,
            t + 900,
            account,
            &lid,
            source_ip,
            "IPC$",
            Some("svcctl"),
            true,
        );
        self.service_installed(
            target,
            t + 1100,
            account,
            &lid,
            "PSEXESVC",
            "%SystemRoot%\\PSEXESVC.exe",
        );
        self.service_state(target, t + 1300, "PSEXESVC", true);
        let procs = self.procs(target);
        let system = Who::system(target);
        let svc = self.spawn(
            target,
            t + 1250,
            &procs.services,
            "C:\\Windows\\PSEXESVC.exe",
            "C:\\Windows\\PSEXESVC.exe",
            &system,
        );
        self.pipe(target, t + 1400, &svc, 17, "\\PSEXESVC");
        let tag = 1000 + self.rng.below(9000);
        for suffix in ["stdin", "stdout", "stderr"] {
            let name = format!("PSEXESVC-{source_host}-{tag}-{suffix}");
            self.share_access(
                target,
                t + 1600,
                account,
                &lid,
                source_ip,
                "IPC$",
                Some(&name),
                true,
            );
            self.pipe(target, t + 1650, &svc, 17, &format!("\\{name}"));
        }
        let image = command
            .split_once(' ')
            .map_or(command, |(i, _)| i)
            .trim_matches('"');
        let image = if image.eq_ignore_ascii_case("cmd") || image.eq_ignore_ascii_case("cmd.exe") {
            "C:\\Windows\\System32\\cmd.exe".to_owned()
        } else {
            image.to_owned()
        };
        let hash = if copied.is_some() {
            "i1-msupdate".to_owned()
        } else {
            image.to_ascii_lowercase()
        };
        let child = self.spawn_with_hash(target, t + 1900, &svc, &image, command, &system, &hash);
        let done = t + session - 2 * SECOND;
        self.service_state(target, done, "PSEXESVC", false);
        self.exit(target, done - 500, &svc);
        (child, done)
    }

    /// The IT team's nightly PsExec maintenance from the jump host.
    fn it_psexec(&mut self) {
        let jump = host("JUMP01");
        let itops = Account::service("svc_itops");
        let procs = self.procs(jump);
        for d in 0..self.days {
            if !Self::weekday(d) {
                continue;
            }
            let t0 = self.day(d) + HOUR + 30 * MINUTE + self.rng.range(0, 40 * SECOND);
            let lid = self.logon_id();
            self.logon_with(
                jump,
                t0,
                &itops,
                4,
                From {
                    ip: "-",
                    workstation: "-",
                },
                Some(40 * MINUTE),
                &lid,
                None,
            );
            let who = Who::account(&itops, &lid, "High");
            let task = self.spawn(
                jump,
                t0 + 500,
                &procs.svchost,
                "C:\\Windows\\System32\\cmd.exe",
                "C:\\Windows\\system32\\cmd.exe /c \"C:\\Scripts\\nightly-maint.cmd\"",
                &who,
            );
            let mut t = t0 + 3 * SECOND;
            for name in MAINTAINED_SERVERS {
                let target = host(name);
                let cmd = format!(
                    "C:\\Tools\\Sysinternals\\PsExec.exe \\\\{name} -accepteula -nobanner -s cmd /c \"C:\\Scripts\\Maint\\collect-health.cmd\""
                );
                let psexec = self.spawn(
                    jump,
                    t,
                    &task,
                    "C:\\Tools\\Sysinternals\\PsExec.exe",
                    &cmd,
                    &who,
                );
                self.connect(
                    jump,
                    t + 200,
                    &psexec,
                    HOSTS[target].ip,
                    445,
                    None,
                    Some(("smb", 420_000, 30_000, 40_000)),
                );
                let (child, done) = self.psexec_target(
                    target,
                    t + 400,
                    &itops,
                    "10.10.30.5",
                    "JUMP01",
                    false,
                    None,
                    "cmd /c \"C:\\Scripts\\Maint\\collect-health.cmd\"",
                );
                self.exit(target, done - 900, &child);
                self.exit(jump, done, &psexec);
                t = done + self.rng.range(2 * SECOND, 6 * SECOND);
            }
            self.exit(jump, t + SECOND, &task);
        }
    }

    /// The weekly vulnerability scan, Wednesday evening.
    fn vulnerability_scan(&mut self) {
        let nessus = Account::service("svc_nessus");
        let mut t = self.day(2) + 20 * HOUR + self.rng.range(0, 5 * MINUTE);
        const PROBED: &[u16] = &[
            21, 22, 23, 25, 53, 80, 88, 110, 111, 135, 139, 143, 389, 443, 445, 465, 587, 636, 993,
            995, 1433, 1521, 2049, 3268, 3306, 3389, 5432, 5900, 5985, 5986, 6379, 8000, 8080,
            8443, 9200, 27017,
        ];
        for (h, target) in HOSTS.iter().enumerate() {
            let open: Vec<u16> = match target.role {
                Role::WebServer => vec![22, 80, 443],
                Role::DomainController => vec![53, 88, 135, 139, 389, 445, 636, 3268, 3389, 5985],
                Role::Database => vec![135, 139, 445, 1433, 3389, 5985],
                Role::AppServer => vec![80, 135, 139, 443, 445, 3389, 5985],
                _ => vec![135, 139, 445, 3389, 5985],
            };
            for &port in PROBED {
                let state = if open.contains(&port) {
                    "SF"
                } else if target.windows {
                    "S0"
                } else {
                    "REJ"
                };
                let (out, inn) = if state == "SF" {
                    (
                        self.rng.range(0, 300) as u64,
                        self.rng.range(0, 2000) as u64,
                    )
                } else {
                    (0, 0)
                };
                let duration = self.rng.range(1, 3000);
                self.zconn(
                    t, SCANNER_IP, target.ip, port, "tcp", "-", out, inn, duration, state,
                );
                t += self.rng.range(20, 400);
            }
            if target.windows {
                // Default-credential checks, then the scan account.
                let from = From {
                    ip: SCANNER_IP,
                    workstation: "SCAN01",
                };
                for user in ["administrator", "admin", "guest", "root", "test"] {
                    for _ in 0..self.rng.range(2, 3) {
                        let unknown = matches!(user, "admin" | "root" | "test");
                        self.failed_logon(h, t, user, 3, from, unknown);
                        t += self.rng.range(200, 2500);
                    }
                }
                let lid = self.logon_id();
                let session = self.rng.range(2 * MINUTE, 6 * MINUTE);
                self.logon_with(h, t, &nessus, 3, from, Some(session), &lid, Some(true));
                self.share_access(h, t + 500, &nessus, &lid, SCANNER_IP, "IPC$", None, false);
                self.share_access(
                    h,
                    t + 900,
                    &nessus,
                    &lid,
                    SCANNER_IP,
                    "IPC$",
                    Some("svcctl"),
                    true,
                );
                self.service_state(h, t + 1500, "Remote Registry", true);
                self.share_access(
                    h,
                    t + 2500,
                    &nessus,
                    &lid,
                    SCANNER_IP,
                    "IPC$",
                    Some("winreg"),
                    true,
                );
                self.share_access(
                    h,
                    t + 30 * SECOND,
                    &nessus,
                    &lid,
                    SCANNER_IP,
                    "ADMIN$",
                    None,
                    false,
                );
                self.share_access(
                    h,
                    t + 31 * SECOND,
                    &nessus,
                    &lid,
                    SCANNER_IP,
                    "C$",
                    None,
                    false,
                );
                self.service_state(h, t + session - 5 * SECOND, "Remote Registry", false);
                self.zconn(
                    t,
                    SCANNER_IP,
                    target.ip,
                    445,
                    "tcp",
                    "smb,gssapi,dce_rpc",
                    180_000,
                    2_400_000,
                    session,
                    "SF",
                );
                t += session / 3;
            } else {
                // SSH password checks and web probes.
                let mut pid = self.linux_pid();
                for user in ["root", "admin", "root", "test"] {
                    let port = self.rng.range(32768, 60999);
                    pid += 3;
                    if user == "root" {
                        self.syslog(h, t, "sshd", pid, format!("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={SCANNER_IP}  user=root"));
                        self.syslog(
                            h,
                            t + 2200,
                            "sshd",
                            pid,
                            format!("Failed password for root from {SCANNER_IP} port {port} ssh2"),
                        );
                        self.syslog(h, t + 2300, "sshd", pid, format!("Connection closed by authenticating user root {SCANNER_IP} port {port} [preauth]"));
                    } else {
                        self.syslog(
                            h,
                            t,
                            "sshd",
                            pid,
                            format!("Invalid user {user} from {SCANNER_IP} port {port}"),
                        );
                        self.syslog(
                            h,
                            t + 100,
                            "sshd",
                            pid,
                            "pam_unix(sshd:auth): check pass; user unknown",
                        );
                        self.syslog(h, t + 2200, "sshd", pid, format!("Failed password for invalid user {user} from {SCANNER_IP} port {port} ssh2"));
                        self.syslog(h, t + 2300, "sshd", pid, format!("Connection closed by invalid user {user} {SCANNER_IP} port {port} [preauth]"));
                    }
                    self.zconn(
                        t, SCANNER_IP, target.ip, 22, "tcp", "ssh", 1800, 2400, 2400, "SF",
                    );
                    t += self.rng.range(3 * SECOND, 8 * SECOND);
                }
                let n = 900 + self.rng.below(90) as u32;
                self.ssh_session(
                    h,
                    t,
                    "nessus",
                    1002,
                    SCANNER_IP,
                    "publickey",
                    n,
                    &[
                        "/bin/sh -c uname -a",
                        "/bin/sh -c dpkg-query -W -f='${Package} ${Version}\\n'",
                        "/bin/sh -c cat /etc/ssh/sshd_config",
                        "/bin/sh -c ls -la /etc/cron.d /var/spool/cron/crontabs",
                    ],
                    false,
                );
                t += 2 * MINUTE;
                self.web_probes(t, target.ip, target.name);
                t += 90 * SECOND;
            }
            t += self.rng.range(5 * SECOND, 30 * SECOND);
        }
        let app = host("APP01");
        self.web_probes(t, HOSTS[app].ip, "app01.corp.local");
    }

    fn web_probes(&mut self, mut t: i64, ip: &str, name: &str) {
        const PROBES: &[&str] = &[
            "/",
            "/robots.txt",
            "/.env",
            "/.git/config",
            "/server-status",
            "/phpmyadmin/index.php",
            "/wp-login.php",
            "/admin/",
            "/cgi-bin/test-cgi",
            "/cgi-bin/status.sh",
            "/cgi-bin/admin.sh",
            "/_vti_bin/shtml.dll",
            "/scripts/..%c0%af../winnt/system32/cmd.exe",
            "/manager/html",
            "/solr/admin/info/system",
            "/console/login/LoginForm.jsp",
            "/HNAP1/",
            "/api/v1/status",
            "/nessus-check-1723.html",
            "/backup.zip",
            "/config.php.bak",
        ];
        for uri in PROBES {
            let status = match *uri {
                "/" | "/robots.txt" | "/api/v1/status" => 200,
                "/admin/" | "/server-status" => 403,
                _ => 404,
            };
            let len = if status == 200 {
                self.rng.range(100, 9000) as u64
            } else {
                162
            };
            self.zhttp(
                t,
                SCANNER_IP,
                ip,
                80,
                "GET",
                name,
                uri,
                Some("Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0)"),
                status,
                len,
                Some("text/html"),
            );
            t += self.rng.range(150, 1500);
        }
    }

    /// Nightly backups of the servers, the system-state hive exports, the
    /// off-site replication and the web servers' rsync.
    fn backups(&mut self) {
        let bkp = host("BKP01");
        let svc = Account::service("svc_backup");
        let bkp_agent = self.resident(
            bkp,
            "C:\\Program Files\\BackupAgent\\bkagent.exe",
            "\"C:\\Program Files\\BackupAgent\\bkagent.exe\" -service",
            Who::account(&svc, "0x2c41a", "High"),
        );
        let mut local_agents = Vec::new();
        for name in MAINTAINED_SERVERS {
            let h = host(name);
            let agent = self.resident(
                h,
                "C:\\Program Files\\BackupAgent\\bkagent.exe",
                "\"C:\\Program Files\\BackupAgent\\bkagent.exe\" -service",
                Who::system(h),
            );
            local_agents.push((h, agent));
        }
        for d in 0..self.days {
            let day = self.day(d);
            // System state: the local agent exports the SYSTEM and SOFTWARE hives.
            for (h, agent) in local_agents.clone() {
                let t = day + 21 * HOUR + 50 * MINUTE + self.rng.range(0, 4 * MINUTE);
                let system = Who::system(h);
                for hive in ["SYSTEM", "SOFTWARE"] {
                    let cmd = format!(
                        "C:\\Windows\\system32\\reg.exe save HKLM\\{hive} \"C:\\ProgramData\\BackupAgent\\SystemState\\{hive}.hiv\" /y"
                    );
                    let reg = self.spawn(
                        h,
                        t,
                        &agent,
                        "C:\\Windows\\System32\\reg.exe",
                        &cmd,
                        &system,
                    );
                    self.file_created(
                        h,
                        t + 900,
                        &reg,
                        &format!("C:\\ProgramData\\BackupAgent\\SystemState\\{hive}.hiv"),
                    );
                    self.exit(h, t + 2 * SECOND, &reg);
                }
            }
            // The backup server pulls each server's volume.
            let mut t = day + 22 * HOUR + self.rng.range(0, 2 * MINUTE);
            for name in MAINTAINED_SERVERS.iter().filter(|n| **n != "BKP01") {
                let target = host(name);
                let dc = self.dc();
                self.tgs(
                    dc,
                    t - 300,
                    &svc,
                    &format!("{name}$"),
                    &Account::machine(target).sid,
                    HOSTS[bkp].ip,
                    "0x12",
                );
                let session = self.rng.range(10 * MINUTE, 45 * MINUTE);
                let lid = self.logon(
                    target,
                    t,
                    &svc,
                    3,
                    From {
                        ip: HOSTS[bkp].ip,
                        workstation: "BKP01",
                    },
                    Some(session),
                );
                self.share_access(
                    target,
                    t + 400,
                    &svc,
                    &lid,
                    HOSTS[bkp].ip,
                    "C$",
                    None,
                    false,
                );
                let bytes = self.rng.range(2_000_000_000, 9_000_000_000) as u64;
                self.connect(
                    bkp,
                    t + 300,
                    &bkp_agent,
                    HOSTS[target].ip,
                    445,
                    None,
                    Some(("smb,gssapi", 4_000_000, bytes, session)),
                );
                t += session + self.rng.range(SECOND, MINUTE);
            }
            // Off-site replication.
            let t = day + 23 * HOUR + 30 * MINUTE + self.rng.range(0, 5 * MINUTE);
            self.lookup(
                bkp,
                t - 2 * SECOND,
                &bkp_agent,
                OFFSITE_BACKUP.name,
                Some(OFFSITE_BACKUP.ip),
                true,
            );
            for stream in 0..4 {
                let bytes = self.rng.range(1_000_000_000, 3_000_000_000) as u64;
                let dur = self.rng.range(HOUR, 2 * HOUR);
                self.connect(
                    bkp,
                    t + stream * 200,
                    &bkp_agent,
                    OFFSITE_BACKUP.ip,
                    443,
                    Some(OFFSITE_BACKUP.name),
                    Some(("ssl", bytes, 2_000_000, dur)),
                );
            }
            // The web servers' rsync to the backup appliance.
            for web in hosts_with(Role::WebServer) {
                let t = day + HOUR + 15 * MINUTE + self.rng.range(0, 3 * SECOND);
                let name = HOSTS[web].name;
                self.cron(
                    web,
                    t,
                    "root",
                    &format!(
                        "rsync -az --delete /var/www/ backup@10.10.5.41:/srv/backup/{name}/www/"
                    ),
                );
                let bytes = self.rng.range(20_000_000, 600_000_000) as u64;
                let duration = self.rng.range(MINUTE, 15 * MINUTE);
                self.zconn(
                    t + 500,
                    HOSTS[web].ip,
                    "10.10.5.41",
                    22,
                    "tcp",
                    "ssh",
                    bytes,
                    300_000,
                    duration,
                    "SF",
                );
            }
        }
    }

    /// Updaters registering scheduled tasks.
    fn updater_tasks(&mut self) {
        let arm = "C:\\Program Files (x86)\\Common Files\\Adobe\\ARM\\1.0\\AdobeARM.exe";
        for ws in hosts_with(Role::Workstation) {
            let procs = self.procs(ws);
            let system = Who::system(ws);
            let d = self.rng.range(0, 4);
            let t = self.day(d) + self.rng.range(9 * HOUR, 16 * HOUR);
            let updater = self.spawn(
                ws,
                t,
                &procs.svchost,
                arm,
                &format!("\"{arm}\" /ArmUpdate"),
                &system,
            );
            let cmd = format!(
                "schtasks.exe /Create /F /RU SYSTEM /SC DAILY /ST 09:00 /TN \"Adobe Acrobat Update Task\" /TR \"\\\"{arm}\\\"\""
            );
            let st = self.spawn(
                ws,
                t + 40 * SECOND,
                &updater,
                "C:\\Windows\\System32\\schtasks.exe",
                &cmd,
                &system,
            );
            self.task_registered(
                ws,
                t + 41 * SECOND,
                &system,
                "\\Adobe Acrobat Update Task",
                arm,
                "",
                "S-1-5-18",
            );
            self.exit(ws, t + 42 * SECOND, &st);
            self.exit(ws, t + 70 * SECOND, &updater);
        }
        // Zoom, per user, on the two machines that have it.
        for name in ["carol", "heidi"] {
            let p = person(name);
            let ws = workstation_of(p);
            let sessions: Vec<Session> = self
                .sessions
                .iter()
                .filter(|s| s.person == p)
                .cloned()
                .collect();
            for (i, s) in sessions.iter().enumerate() {
                let zoom_dir = format!("C:\\Users\\{name}\\AppData\\Roaming\\Zoom\\bin");
                let t = s.start + self.rng.range(20 * MINUTE, 3 * HOUR);
                let meeting = self.rng.below(800_000_000);
                let zoom = self.spawn(
                    ws,
                    t,
                    &s.explorer,
                    &format!("{zoom_dir}\\Zoom.exe"),
                    &format!(
                        "\"{zoom_dir}\\Zoom.exe\" \"--url=zoommtg://zoom.us/join?confno=8{}\"",
                        100_000_000 + meeting
                    ),
                    &s.who,
                );
                self.connect(
                    ws,
                    t + 3 * SECOND,
                    &zoom,
                    "192.0.2.56",
                    443,
                    Some("zoom.us"),
                    Some(("ssl", 8_000_000, 60_000_000, 40 * MINUTE)),
                );
                self.exit(ws, t + 45 * MINUTE, &zoom);
                if i == 0 {
                    let updater = self.spawn(
                        ws,
                        t + 50 * SECOND,
                        &zoom,
                        &format!("{zoom_dir}\\ZoomUpdater.exe"),
                        &format!("\"{zoom_dir}\\ZoomUpdater.exe\" /register"),
                        &s.who,
                    );
                    let task = format!("ZoomUpdateTaskUser{}", PEOPLE[p].rid);
                    let cmd = format!(
                        "schtasks.exe /create /tn \"{task}\" /tr \"\\\"{zoom_dir}\\ZoomUpdater.exe\\\" /silent\" /sc daily /st 10:30 /f"
                    );
                    let st = self.spawn(
                        ws,
                        t + 55 * SECOND,
                        &updater,
                        "C:\\Windows\\System32\\schtasks.exe",
                        &cmd,
                        &s.who,
                    );
                    self.task_registered(
                        ws,
                        t + 56 * SECOND,
                        &s.who,
                        &format!("\\{task}"),
                        &format!("{zoom_dir}\\ZoomUpdater.exe"),
                        "/silent",
                        &Account::person(p).sid,
                    );
                    self.exit(ws, t + 57 * SECOND, &st);
                    self.exit(ws, t + 90 * SECOND, &updater);
                } else {
                    // The registered task runs the updater daily.
                    let t =
                        self.day(s.day) + 10 * HOUR + 30 * MINUTE + self.rng.range(0, 30 * SECOND);
                    let procs = self.procs(ws);
                    let run = self.spawn(
                        ws,
                        t,
                        &procs.svchost,
                        &format!("{zoom_dir}\\ZoomUpdater.exe"),
                        &format!("\"{zoom_dir}\\ZoomUpdater.exe\" /silent"),
                        &s.who,
                    );
                    self.exit(ws, t + 20 * SECOND, &run);
                }
            }
        }
    }

    /// Security 4698: a scheduled task registered, with its XML.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn task_registered(
        &mut self,
        h: usize,
        t: i64,
        who: &Who,
        name: &str,
        command: &str,
        arguments: &str,
        run_as_sid: &str,
    ) {
        let args = if arguments.is_empty() {
            String::new()
        } else {
            format!("\n      <Arguments>{arguments}</Arguments>")
        };
        let content = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<Task version=\"1.2\" xmlns=\"http://schemas.microsoft.com/windows/2004/02/mit/task\">\n  <RegistrationInfo>\n    <URI>{name}</URI>\n  </RegistrationInfo>\n  <Principals>\n    <Principal id=\"Author\">\n      <UserId>{run_as_sid}</UserId>\n      <RunLevel>HighestAvailable</RunLevel>\n    </Principal>\n  </Principals>\n  <Actions Context=\"Author\">\n    <Exec>\n      <Command>{command}</Command>{args}\n    </Exec>\n  </Actions>\n</Task>"
        );
        self.security(
            h,
            t,
            4698,
            true,
            12804,
            vec![
                ("SubjectUserSid", who.sid.clone().into()),
                ("SubjectUserName", who.name.clone().into()),
                ("SubjectDomainName", who.domain.clone().into()),
                ("SubjectLogonId", who.logon_id.clone().into()),
                ("TaskName", name.into()),
                ("TaskContent", content.into()),
            ],
        );
    }

    /// heidi's stale saved password on WS08, Monday to Wednesday.
    fn stale_password(&mut self) {
        let p = person("heidi");
        let ws = workstation_of(p);
        let fs = host("FS01");
        let dc = host("DC01");
        let account = Account::person(p);
        let ip = HOSTS[ws].ip;
        let from = From {
            ip,
            workstation: "WS08",
        };
        let sessions: Vec<Session> = self
            .sessions
            .iter()
            .filter(|s| s.person == p && s.day <= 2)
            .cloned()
            .collect();
        if let Some(first) = sessions.first() {
            // The password change on Monday morning.
            let t = first.start + 3 * MINUTE;
            self.security(
                dc,
                t,
                4723,
                true,
                13824,
                vec![
                    ("TargetUserName", account.name.clone().into()),
                    ("TargetDomainName", super::world::DOMAIN.into()),
                    ("TargetSid", account.sid.clone().into()),
                    ("SubjectUserSid", account.sid.clone().into()),
                    ("SubjectUserName", account.name.clone().into()),
                    ("SubjectDomainName", super::world::DOMAIN.into()),
                    ("SubjectLogonId", first.logon_id.clone().into()),
                    ("PrivilegeList", "-".into()),
                ],
            );
        }
        for s in sessions {
            let mut t = s.start + self.rng.range(40 * SECOND, 2 * MINUTE);
            for _ in 0..6 {
                self.failed_logon(fs, t, "heidi", 3, from, false);
                self.security(
                    dc,
                    t + 30,
                    4776,
                    false,
                    14336,
                    vec![
                        (
                            "PackageName",
                            "MICROSOFT_AUTHENTICATION_PACKAGE_V1_0".into(),
                        ),
                        ("TargetUserName", "heidi".into()),
                        ("Workstation", "WS08".into()),
                        ("Status", "0xc000006a".into()),
                    ],
                );
                t += self.rng.range(8 * SECOND, 20 * SECOND);
            }
            // She reconnects the drive with her new password.
            let t = t + self.rng.range(3 * MINUTE, 7 * MINUTE);
            let session = self.rng.range(30 * MINUTE, 3 * HOUR);
            let lid = self.logon(fs, t, &account, 3, from, Some(session));
            self.share_access(fs, t + 200, &account, &lid, ip, "Shared", None, false);
        }
    }

    /// The SaaS monitoring agent's heartbeat from three servers.
    fn monitoring_heartbeat(&mut self) {
        for name in ["web01", "web02", "APP01"] {
            let h = host(name);
            let agent = if HOSTS[h].windows {
                Some(self.resident(
                    h,
                    "C:\\Program Files\\SaaSMon\\agent\\saasmon-agent.exe",
                    "\"C:\\Program Files\\SaaSMon\\agent\\saasmon-agent.exe\" --service",
                    Who::system(h),
                ))
            } else {
                None
            };
            let mut t = self.start + self.rng.range(0, 10 * MINUTE);
            let mut n = 0;
            while t < self.end() {
                if n % 6 == 0 {
                    match &agent {
                        Some(p) => {
                            let p = p.clone();
                            self.lookup(h, t - 80, &p, MONITORING.name, Some(MONITORING.ip), true);
                        }
                        None => self.zdns(
                            t - 80,
                            HOSTS[h].ip,
                            UPSTREAM_DNS,
                            MONITORING.name,
                            "A",
                            Some(MONITORING.ip.to_owned()),
                        ),
                    }
                }
                let out = self.rng.range(1800, 5200) as u64;
                let inn = self.rng.range(400, 900) as u64;
                match &agent {
                    Some(p) => {
                        let p = p.clone();
                        self.connect(
                            h,
                            t,
                            &p,
                            MONITORING.ip,
                            443,
                            Some(MONITORING.name),
                            Some(("ssl", out, inn, 350)),
                        );
                    }
                    None => {
                        self.zconn(
                            t,
                            HOSTS[h].ip,
                            MONITORING.ip,
                            443,
                            "tcp",
                            "ssl",
                            out,
                            inn,
                            350,
                            "SF",
                        );
                    }
                }
                n += 1;
                t += 10 * MINUTE + self.rng.range(-3 * SECOND, 3 * SECOND);
            }
        }
    }

    /// The endpoint agent's hash lookups in DNS, on every Windows host.
    fn av_lookups(&mut self) {
        for h in windows_hosts() {
            let agent = self.resident(
                h,
                "C:\\Program Files\\AvCloud\\Endpoint\\avcsvc.exe",
                "\"C:\\Program Files\\AvCloud\\Endpoint\\avcsvc.exe\"",
                Who::system(h),
            );
            for d in 0..self.days {
                let n = if HOSTS[h].role.is_server() {
                    6
                } else if Self::weekday(d) {
                    12
                } else {
                    3
                };
                for _ in 0..n {
                    let t = self.day(d)
                        + self.rng.range(
                            if HOSTS[h].role.is_server() {
                                0
                            } else {
                                8 * HOUR
                            },
                            if HOSTS[h].role.is_server() {
                                DAY
                            } else {
                                18 * HOUR
                            },
                        );
                    let sha1 = digest_hex(&format!("file:{h}:{t}"), 40).to_ascii_lowercase();
                    let name = format!("{sha1}.f2.{AV_LOOKUP_ZONE}");
                    self.lookup(h, t, &agent, &name, Some("127.0.0.1"), true);
                }
            }
        }
    }

    /// RC4 service tickets for the legacy intranet application.
    fn legacy_rc4(&mut self) {
        let sid = Account::service("svc_legacyapp").sid;
        let app = host("APP01");
        let sessions = self.sessions.clone();
        for s in sessions {
            for _ in 0..self.rng.range(1, 2) {
                let t = self.between(s.start + 10 * MINUTE, s.end - 10 * MINUTE);
                let dc = self.dc();
                self.tgs(
                    dc,
                    t,
                    &Account::person(s.person),
                    "svc_legacyapp",
                    &sid,
                    HOSTS[s.host].ip,
                    "0x17",
                );
                let previous = self.label;
                self.label = Label::Noise;
                let page = *self.rng.pick(&[
                    "/portal/home.aspx",
                    "/portal/timesheets.aspx",
                    "/portal/directory.aspx",
                    "/portal/news.aspx",
                ]);
                let len = self.rng.range(9000, 90_000) as u64;
                self.zhttp(
                    t + 300,
                    HOSTS[s.host].ip,
                    HOSTS[app].ip,
                    80,
                    "GET",
                    "intranet.corp.local",
                    page,
                    Some(CHROME_UA),
                    200,
                    len,
                    Some("text/html"),
                );
                self.label = previous;
            }
        }
    }

    /// The IT admins: RDP to the jump host and onwards, helpdesk, runas.
    fn admin_remote_access(&mut self) {
        let jump = host("JUMP01");
        let jump_ip = HOSTS[jump].ip;
        for name in ["frank", "ivan"] {
            let p = person(name);
            let ws = workstation_of(p);
            let admin = Account::admin(p);
            let sessions: Vec<Session> = self
                .sessions
                .iter()
                .filter(|s| s.person == p)
                .cloned()
                .collect();
            for s in sessions {
                let t = s.start + self.rng.range(15 * MINUTE, 2 * HOUR);
                let session = self.rng.range(HOUR, 4 * HOUR);
                let from = From {
                    ip: HOSTS[ws].ip,
                    workstation: HOSTS[ws].name,
                };
                let lid = self.logon(jump, t, &admin, 10, from, Some(session));
                let mstsc = self.spawn(
                    ws,
                    t - 20 * SECOND,
                    &s.explorer,
                    "C:\\Windows\\System32\\mstsc.exe",
                    "\"C:\\Windows\\system32\\mstsc.exe\" /v:jump01.corp.local",
                    &s.who,
                );
                self.connect(
                    ws,
                    t - 18 * SECOND,
                    &mstsc,
                    jump_ip,
                    3389,
                    Some("jump01.corp.local"),
                    Some(("-", 2_000_000, 40_000_000, session)),
                );
                let who = Who::account(&admin, &lid, "High");
                let explorer = self.shell(jump, who.clone());
                let tool = *self.rng.pick(&[
                    "\"C:\\Windows\\system32\\mmc.exe\" \"C:\\Windows\\system32\\dsa.msc\"",
                    "\"C:\\Windows\\system32\\mmc.exe\" \"C:\\Windows\\system32\\dnsmgmt.msc\"",
                    "\"C:\\Windows\\system32\\mmc.exe\" \"C:\\Windows\\system32\\gpmc.msc\"",
                ]);
                self.spawn(
                    jump,
                    t + 2 * MINUTE,
                    &explorer,
                    "C:\\Windows\\System32\\mmc.exe",
                    tool,
                    &who,
                );
                // Onwards to a server.
                let server = host(
                    MAINTAINED_SERVERS[self.rng.below(MAINTAINED_SERVERS.len() as u64) as usize],
                );
                let t2 = t + self.rng.range(10 * MINUTE, session / 2);
                let s2 = self.rng.range(5 * MINUTE, 40 * MINUTE);
                self.logon(
                    server,
                    t2,
                    &admin,
                    10,
                    From {
                        ip: jump_ip,
                        workstation: "JUMP01",
                    },
                    Some(s2),
                );
                self.zconn(
                    t2,
                    jump_ip,
                    HOSTS[server].ip,
                    3389,
                    "tcp",
                    "-",
                    900_000,
                    15_000_000,
                    s2,
                    "SF",
                );
                if name == "ivan" {
                    // Helpdesk: fetch logs from a workstation's C$.
                    let target = hosts_with(Role::Workstation)[self.rng.below(10) as usize];
                    if target != ws {
                        let t3 = t + self.rng.range(5 * MINUTE, session - 5 * MINUTE);
                        let session = self.rng.range(MINUTE, 5 * MINUTE);
                        let lid3 = self.logon(
                            target,
                            t3,
                            &admin,
                            3,
                            From {
                                ip: jump_ip,
                                workstation: "JUMP01",
                            },
                            Some(session),
                        );
                        self.share_access(
                            target,
                            t3 + 300,
                            &admin,
                            &lid3,
                            jump_ip,
                            "C$",
                            None,
                            false,
                        );
                        self.zconn(
                            t3,
                            jump_ip,
                            HOSTS[target].ip,
                            445,
                            "tcp",
                            "smb,gssapi",
                            40_000,
                            3_000_000,
                            60_000,
                            "SF",
                        );
                    }
                } else {
                    // runas /netonly with the admin account on his workstation.
                    let t4 = s.start + self.rng.range(30 * MINUTE, 5 * HOUR);
                    let lid4 = self.logon_id();
                    let session = self.rng.range(10 * MINUTE, HOUR);
                    self.logon_with(
                        ws,
                        t4,
                        &admin,
                        9,
                        From {
                            ip: "::1",
                            workstation: "-",
                        },
                        Some(session),
                        &lid4,
                        None,
                    );
                    let runas_who = Who::account(&Account::person(p), &s.logon_id, "Medium");
                    self.spawn(
                        ws,
                        t4 - 5 * SECOND,
                        &s.explorer,
                        "C:\\Windows\\System32\\runas.exe",
                        "runas  /netonly /user:CORP\\admin-frank \"mmc.exe dsa.msc\"",
                        &runas_who,
                    );
                }
            }
        }
        // Tuesday afternoon: frank helps dave on WS04 over RDP from the
        // jump host (his credentials stay in WS04's memory).
        let dave = host("WS04");
        let frank = Account::admin(person("frank"));
        let t = self.day(1) + 15 * HOUR + 32 * MINUTE + self.rng.range(0, 30 * SECOND);
        let lid = self.logon(
            dave,
            t,
            &frank,
            10,
            From {
                ip: jump_ip,
                workstation: "JUMP01",
            },
            Some(25 * MINUTE),
        );
        self.zconn(
            t - 2 * SECOND,
            jump_ip,
            HOSTS[dave].ip,
            3389,
            "tcp",
            "-",
            1_200_000,
            30_000_000,
            25 * MINUTE,
            "SF",
        );
        let who = Who::account(&frank, &lid, "High");
        let shell = self.shell(dave, who.clone());
        self.spawn(
            dave,
            t + 3 * MINUTE,
            &shell,
            "C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE",
            "\"C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE\" /profiles",
            &who,
        );
        self.spawn(
            dave,
            t + 9 * MINUTE,
            &shell,
            "C:\\Windows\\System32\\control.exe",
            "\"C:\\Windows\\system32\\control.exe\" mlcfg32.cpl",
            &who,
        );
    }

    /// The monitoring account polls every Windows host every two hours.
    fn service_account_polling(&mut self) {
        let svc = Account::service("svc_monitor");
        let from = From {
            ip: "10.10.5.50",
            workstation: "SCCM01",
        };
        for h in windows_hosts() {
            let mut t = self.start + self.rng.range(0, 2 * HOUR);
            while t < self.end() {
                let session = self.rng.range(2 * SECOND, 9 * SECOND);
                self.logon(h, t, &svc, 3, from, Some(session));
                t += 2 * HOUR + self.rng.range(-2 * MINUTE, 2 * MINUTE);
            }
        }
    }

    /// The management server's nightly vendor downloads.
    fn admin_script_downloads(&mut self) {
        let sccm = host("SCCM01");
        let procs = self.procs(sccm);
        let system = Who::system(sccm);
        for d in 0..self.days {
            let t = self.day(d) + 3 * HOUR + 10 * MINUTE + self.rng.range(0, 60 * SECOND);
            let ps = self.spawn(sccm, t, &procs.svchost, "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe", "\"C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe\" -NoProfile -ExecutionPolicy Bypass -File \"C:\\Scripts\\Get-VendorUpdates.ps1\"", &system);
            self.lookup(
                sccm,
                t + 2 * SECOND,
                &ps,
                VENDOR_UPDATES.name,
                Some(VENDOR_UPDATES.ip),
                true,
            );
            let mut now = t + 3 * SECOND;
            for uri in [
                "/agent/latest/AgentSetup-x64.msi",
                "/agent/latest/AgentSetup-x86.msi",
                "/tools/latest/vt-cli.exe",
            ] {
                self.connect(
                    sccm,
                    now,
                    &ps,
                    VENDOR_UPDATES.ip,
                    80,
                    Some(VENDOR_UPDATES.name),
                    None,
                );
                let len = self.rng.range(2_000_000, 90_000_000) as u64;
                let mime = if uri.ends_with(".exe") {
                    "application/x-dosexec"
                } else {
                    "application/x-msi"
                };
                self.zhttp(
                    now,
                    HOSTS[sccm].ip,
                    VENDOR_UPDATES.ip,
                    80,
                    "GET",
                    VENDOR_UPDATES.name,
                    uri,
                    Some(POWERSHELL_UA),
                    200,
                    len,
                    Some(mime),
                );
                let file = uri.rsplit('/').next().unwrap_or(uri);
                self.file_created(
                    sccm,
                    now + 20 * SECOND,
                    &ps,
                    &format!("D:\\Sources\\Vendor\\{file}"),
                );
                now += self.rng.range(20 * SECOND, 2 * MINUTE);
            }
            self.exit(sccm, now + 5 * SECOND, &ps);
        }
    }

    /// Internet SSH scanners against the web servers, all week.
    fn internet_ssh_noise(&mut self) {
        for web in hosts_with(Role::WebServer) {
            let ip = HOSTS[web].ip;
            for d in 0..self.days {
                for _ in 0..self.rng.range(5, 9) {
                    let scanner = *self.rng.pick(INTERNET_SCANNERS);
                    let mut t = self.day(d) + self.rng.range(0, DAY - HOUR);
                    if self.rng.percent(15) {
                        let pid = self.linux_pid();
                        let port = self.rng.range(32768, 60999);
                        self.syslog(
                            web,
                            t,
                            "sshd",
                            pid,
                            format!(
                                "Did not receive identification string from {scanner} port {port}"
                            ),
                        );
                        self.zconn(t, scanner, ip, 22, "tcp", "-", 0, 41, 10_000, "SF");
                        continue;
                    }
                    for _ in 0..self.rng.range(2, 20) {
                        let user = if self.rng.percent(35) {
                            "root"
                        } else {
                            *self.rng.pick(GUESSED_USERS)
                        };
                        self.ssh_failure(web, t, scanner, user);
                        t += self.rng.range(SECOND, 8 * SECOND);
                    }
                }
            }
        }
    }

    /// One failed SSH password attempt, as sshd and pam log it, and its
    /// connection.
    pub(crate) fn ssh_failure(&mut self, h: usize, t: i64, from: &str, user: &str) {
        let pid = self.linux_pid();
        let port = self.rng.range(32768, 60999);
        if LINUX_USERS.contains(&user) {
            self.syslog(h, t, "sshd", pid, format!("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={from}  user={user}"));
            self.syslog(
                h,
                t + 1900,
                "sshd",
                pid,
                format!("Failed password for {user} from {from} port {port} ssh2"),
            );
            self.syslog(
                h,
                t + 2000,
                "sshd",
                pid,
                format!(
                    "Connection closed by authenticating user {user} {from} port {port} [preauth]"
                ),
            );
        } else {
            self.syslog(
                h,
                t,
                "sshd",
                pid,
                format!("Invalid user {user} from {from} port {port}"),
            );
            self.syslog(
                h,
                t + 80,
                "sshd",
                pid,
                "pam_unix(sshd:auth): check pass; user unknown",
            );
            self.syslog(h, t + 90, "sshd", pid, format!("pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={from}"));
            self.syslog(
                h,
                t + 1900,
                "sshd",
                pid,
                format!("Failed password for invalid user {user} from {from} port {port} ssh2"),
            );
            self.syslog(
                h,
                t + 2000,
                "sshd",
                pid,
                format!("Connection closed by invalid user {user} {from} port {port} [preauth]"),
            );
        }
        let out = self.rng.range(1500, 2600) as u64;
        self.zconn(
            t - 300,
            from,
            HOSTS[h].ip,
            22,
            "tcp",
            "ssh",
            out,
            2100,
            2400,
            "SF",
        );
    }
}

/// The intel feed: (set name, kind, file text). The planted indicators are
/// hidden among made-up ones that appear nowhere in the logs.
pub(crate) fn intel_feed() -> Vec<(&'static str, &'static str, String)> {
    let mut rng = crate::rng::SplitMix64::seeded("intel-feed");
    let used: Vec<&str> = [
        "203.0.113.45",
        "203.0.113.47",
        "198.51.100.77",
        "198.51.100.140",
        "192.0.2.200",
        "203.0.113.80",
    ]
    .into_iter()
    .chain(INTERNET_SCANNERS.iter().copied())
    .collect();
    let mut ips = String::from(
        "# Community threat feed (fictional), IPv4 indicators, one per line.\n# C2 and malware distribution\n198.51.100.140\n192.0.2.200\n# Phishing kit hosting (2026-03)\n203.0.113.80\n# SSH brute-force sources (abuse reports)\n",
    );
    for ip in &INTERNET_SCANNERS[..4] {
        ips.push_str(ip);
        ips.push('\n');
    }
    ips.push_str("# Other\n");
    let mut n = 0;
    while n < 40 {
        let ip = match rng.below(2) {
            0 => format!("203.0.113.{}", 160 + rng.below(40)),
            _ => format!("198.51.100.{}", 150 + rng.below(40)),
        };
        if used.contains(&ip.as_str()) || ips.contains(&format!("{ip}\n")) {
            continue;
        }
        ips.push_str(&ip);
        ips.push('\n');
        n += 1;
    }
    let mut domains = String::from(
        "# Community threat feed (fictional), domains, one per line.\n# Malware distribution\ndl.pdf-converter-free.top\n# C2\ncdn-static-assets.net\n# Other\n",
    );
    const WORDS: &[&str] = &[
        "secure", "login", "update", "cdn", "mail", "verify", "account", "files", "docs", "cloud",
        "sync", "office", "portal", "auth", "share", "drive",
    ];
    const TLDS: &[&str] = &[
        "top", "xyz", "info", "click", "online", "site", "icu", "net", "com",
    ];
    for _ in 0..40 {
        let a = WORDS[rng.below(WORDS.len() as u64) as usize];
        let b = WORDS[rng.below(WORDS.len() as u64) as usize];
        let tld = TLDS[rng.below(TLDS.len() as u64) as usize];
        domains.push_str(&format!("{a}-{b}{}.{tld}\n", rng.below(100)));
    }
    let mut hashes = String::from(
        "# Community threat feed (fictional), SHA-256 file hashes, one per line.\n# PdfConverter trojanised installer\n",
    );
    hashes.push_str(&sha256_of("i3-installer"));
    hashes.push_str("\n# Other\n");
    for i in 0..40 {
        hashes.push_str(&sha256_of(&format!("unseen-{i}")));
        hashes.push('\n');
    }
    vec![
        ("ips", "ip", ips),
        ("domains", "domain", domains),
        ("hashes", "hash", hashes),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        // PowerShell's -EncodedCommand: UTF-16LE.
        assert_eq!(encode_command("dir"), "ZABpAHIA");
    }
}
