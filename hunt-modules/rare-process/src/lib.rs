//! Hunt module `rare-process`: stacking of process images across hosts
//! (ATT&CK T1204.002, T1036).
//!
//! Reads process creations: Sysmon EventID 1 (`Image`) and Security 4688
//! (`NewProcessName`), flat or with the event data nested
//! (`EventData.Image`), with the host from `Computer`, `Hostname` or the
//! canonical `host`. Image paths are normalised ([`paths::normalise_image`]:
//! case, `\\?\`, `%SystemRoot%`-style variables, device paths, per-user
//! profile names; Unix paths of Sysmon for Linux keep their case) and hosts
//! compared by short name.
//!
//! The main result is the aggregate `rare_process_images`, a
//! [`quarry_sdk::Stack`] of images by host: the coordinator merges it across
//! every shard of the hunt and reports the images seen on at most
//! `max_hosts` hosts in all, the long tail no single shard can see.
//!
//! Within one task the module also reports
//! `rare-process/single-host-user-writable` (low): an image that ran on
//! exactly one host of the shard, from a user-writable location (a profile,
//! AppData, Public, a temporary directory, ProgramData, the recycle bin),
//! when the shard holds at least three hosts.
//!
//! Run by a schedule (`quarry schedule create`), the module also reports
//! `rare-process/first-seen-on-fleet`: an image that none of the
//! schedule's earlier runs in its baseline window saw on any host (from the
//! merged `rare_process_images` stacks of those runs, `quarry:hunt/history`).
//! A schedule's first run has no history and reports none.
//!
//! Parameters: `max_hosts` (1–10000, default 2), `report_user_writable`
//! (default true), `report_first_seen` (default true). See [`stacker`] for
//! the logic.

#![warn(missing_docs)]

pub mod paths;
pub mod stacker;

use paths::{Memo, normalise_host, normalise_image};
use quarry_sdk::{Descriptor, Emitter, Event, Field, Hunt, Output, Params, Predicate};
use stacker::{
    Config, Details, HostId, ImageId, KnownImages, ProcessStart, Stacker, TECHNIQUES, User,
};

/// The module's name in the registry.
pub const NAME: &str = "rare-process";
/// The module's version (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parameter: images on at most this many hosts of the hunt are rare.
pub const PARAM_MAX_HOSTS: &str = "max_hosts";
/// Parameter: whether per-task findings are reported.
pub const PARAM_REPORT_USER_WRITABLE: &str = "report_user_writable";
/// Parameter: whether images a schedule's history never saw are reported.
pub const PARAM_REPORT_FIRST_SEEN: &str = "report_first_seen";

const PARAMS: [&str; 3] = [
    PARAM_MAX_HOSTS,
    PARAM_REPORT_USER_WRITABLE,
    PARAM_REPORT_FIRST_SEEN,
];

quarry_sdk::fields! {
    /// The event fields this module reads. Event data is declared with its
    /// `EventData.` prefix: the host resolves that path in events whose
    /// data is nested and falls back to the flat name in the others.
    pub mod field {
        /// `1` (Sysmon process creation) or `4688` (Security).
        EVENT_ID = "EventID",
        /// Sysmon: the process image.
        IMAGE = "EventData.Image",
        /// 4688: the process image.
        NEW_PROCESS_NAME = "EventData.NewProcessName",
        /// The command line.
        COMMAND_LINE = "EventData.CommandLine",
        /// Sysmon: the parent image.
        PARENT_IMAGE = "EventData.ParentImage",
        /// 4688: the parent image.
        PARENT_PROCESS_NAME = "EventData.ParentProcessName",
        /// Sysmon: the user.
        USER = "EventData.User",
        /// 4688: the creator's account.
        SUBJECT_USER_NAME = "EventData.SubjectUserName",
        /// 4688: the creator's domain.
        SUBJECT_DOMAIN_NAME = "EventData.SubjectDomainName",
        /// The machine that logged the event, as evtx names it.
        COMPUTER = "Computer",
        /// The machine that logged the event, as some shippers name it.
        HOSTNAME = "Hostname",
        /// The canonical host the worker's ingest sets.
        HOST = "host",
    }
}

const EVENT_SYSMON_PROCESS: u64 = 1;
const EVENT_SECURITY_PROCESS: u64 = 4688;

/// The module: a [`Stacker`] per task.
#[derive(Debug)]
pub struct RareProcess {
    stacker: Stacker,
    normalisers: Normalisers,
    skipped_without_host: u64,
}

impl RareProcess {
    /// The configuration for the hunt's parameters.
    pub fn config(params: &Params) -> Result<Config, String> {
        params.ensure_known(&PARAMS)?;
        let defaults = Config::default();
        let max_hosts =
            params.u64_in_range_or(PARAM_MAX_HOSTS, u64::from(defaults.max_hosts), 1..=10_000)?;
        Ok(Config {
            max_hosts: u32::try_from(max_hosts)
                .map_err(|_| format!("parameter `{PARAM_MAX_HOSTS}` is out of range"))?,
            report_user_writable: params
                .bool_or(PARAM_REPORT_USER_WRITABLE, defaults.report_user_writable)?,
            report_first_seen: params
                .bool_or(PARAM_REPORT_FIRST_SEEN, defaults.report_first_seen)?,
        })
    }
}

/// The images the schedule's earlier runs saw, when the task is a
/// scheduled run with history (`quarry:hunt/history`); `None` for a one-off
/// hunt or a schedule's first run, which have nothing to compare with.
pub fn known_images() -> Option<KnownImages> {
    let runs = quarry_sdk::history::runs();
    if runs == 0 {
        return None;
    }
    let images = match quarry_sdk::history::baseline(stacker::AGGREGATE_IMAGES) {
        Some(quarry_sdk::contract::AggregateValue::Stack(stack)) => {
            stack.entries.into_keys().collect()
        }
        _ => Default::default(),
    };
    Some(KnownImages { runs, images })
}

/// `field` unless absent, blank or `-`.
fn meaningful(event: &Event, field: Field) -> Option<&str> {
    event.get_nonempty(field).filter(|v| is_meaningful(v))
}

fn is_meaningful(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty() && value != "-"
}

/// The normalised image of a logged image value, unless it is blank or
/// `-` ([`meaningful`]).
fn logged_image(raw: &str) -> Option<String> {
    is_meaningful(raw).then(|| normalise_image(raw)).flatten()
}

/// What an event says about process starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reading<'a> {
    /// A process start, ready to stack.
    Start(ProcessStart<'a>),
    /// A process start that names no host: it cannot be stacked.
    WithoutHost,
}

/// The task's images and hosts by what was logged: the [`Stacker`] id of
/// their normalised form, or `None` for a value that names none.
#[derive(Debug, Default)]
pub struct Normalisers {
    images: Memo<Option<ImageId>>,
    hosts: Memo<Option<HostId>>,
}

/// The process start an event describes, by `stacker`'s ids; `None` for
/// other events and for starts without an image.
pub fn process_start<'a>(
    event: &'a Event,
    normalisers: &mut Normalisers,
    stacker: &mut Stacker,
) -> Option<Reading<'a>> {
    let image_field = match event.get_u64(field::EVENT_ID)? {
        EVENT_SYSMON_PROCESS => field::IMAGE,
        EVENT_SECURITY_PROCESS => field::NEW_PROCESS_NAME,
        _ => return None,
    };
    // The checks of `meaningful` are cached with the normalisation.
    let raw_image = event.get_nonempty(image_field)?;
    let image = normalisers
        .images
        .get(raw_image, |raw| Some(stacker.image_id(&logged_image(raw)?)))?;
    let host = [field::COMPUTER, field::HOSTNAME, field::HOST]
        .into_iter()
        .find_map(|f| {
            let raw = event.get_nonempty(f)?;
            normalisers
                .hosts
                .get(raw, |raw| Some(stacker.host_id(&normalise_host(raw)?)))
        });
    let Some(host) = host else {
        return Some(Reading::WithoutHost);
    };
    Some(Reading::Start(ProcessStart {
        image,
        raw_image,
        host,
        timestamp_ms: event.timestamp_ms,
        offset: event.offset,
    }))
}

/// The evidence of a process start ([`process_start`]): command line,
/// parent image and user.
pub fn details(event: &Event) -> Details<'_> {
    let parent_field = match event.get_u64(field::EVENT_ID) {
        Some(EVENT_SECURITY_PROCESS) => field::PARENT_PROCESS_NAME,
        _ => field::PARENT_IMAGE,
    };
    let user = meaningful(event, field::USER).map(User::Name).or_else(|| {
        let name = meaningful(event, field::SUBJECT_USER_NAME)?;
        Some(match meaningful(event, field::SUBJECT_DOMAIN_NAME) {
            Some(domain) => User::InDomain { domain, name },
            None => User::Name(name),
        })
    });
    Details {
        command_line: meaningful(event, field::COMMAND_LINE),
        parent_image: meaningful(event, parent_field),
        user,
    }
}

impl Hunt for RareProcess {
    fn describe() -> Descriptor {
        Descriptor::new(NAME, VERSION)
            .with_description(
                "Stacks process images (Sysmon 1, Security 4688) by host across the hunt; reports the binaries seen on at most max_hosts hosts.",
            )
            .with_fields(field::NAMES)
            .with_predicate(Predicate::equals("EventID", &["1", "4688"]))
            // Sysmon 1 has `Image`, 4688 `NewProcessName`: at least one.
            .with_any_of(vec![
                Predicate::exists(field::NAMES[field::IMAGE.index()]),
                Predicate::exists(field::NAMES[field::NEW_PROCESS_NAME.index()]),
            ])
            .with_techniques(&TECHNIQUES)
    }

    fn new(params: &Params) -> Result<Self, String> {
        let mut stacker = Stacker::new(Self::config(params)?);
        if let Some(known) = known_images() {
            stacker = stacker.with_history(known);
        }
        Ok(RareProcess {
            stacker,
            normalisers: Normalisers::default(),
            skipped_without_host: 0,
        })
    }

    fn scan(&mut self, batch: &[Event], _out: &mut Emitter) -> Result<(), String> {
        for event in batch {
            match process_start(event, &mut self.normalisers, &mut self.stacker) {
                Some(Reading::Start(start)) => self.stacker.observe(&start, || details(event)),
                Some(Reading::WithoutHost) => self.skipped_without_host += 1,
                None => {}
            }
        }
        Ok(())
    }

    fn finish(self, out: &mut Output) {
        let report = self.stacker.finish();
        quarry_sdk::log::debug(&format!(
            "{} process starts of {} images on {} hosts stacked; {} without a host skipped",
            report.starts,
            report.stack.len(),
            report.hosts,
            self.skipped_without_host,
        ));
        if report.images_truncated {
            quarry_sdk::log::warn(&format!(
                "more than {} distinct images: later ones are stacked but get no per-shard finding",
                stacker::MAX_TRACKED_IMAGES
            ));
        }
        for finding in report.findings {
            out.emit(finding);
        }
        out.aggregate(report.stack);
    }
}

quarry_sdk::export_hunt!(RareProcess);

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::contract::{self, AggregateValue};
    use quarry_sdk::{MatchOp, Task, merge};

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// An event with `values` at the given fields, the rest absent.
    fn event(offset: u64, values: &[(Field, &str)]) -> Event {
        let mut all = vec![None; field::NAMES.len()];
        for (f, v) in values {
            all[f.index()] = Some((*v).to_owned());
        }
        Event::new(1_700_000_000_000 + offset as i64, offset, all)
    }

    fn sysmon(offset: u64, host: &str, image: &str) -> Event {
        event(
            offset,
            &[
                (field::EVENT_ID, "1"),
                (field::IMAGE, image),
                (field::COMPUTER, host),
                (field::USER, "CORP\\alice"),
                (field::COMMAND_LINE, "x"),
            ],
        )
    }

    fn security(offset: u64, host: &str, image: &str) -> Event {
        event(
            offset,
            &[
                (field::EVENT_ID, "4688"),
                (field::NEW_PROCESS_NAME, image),
                (field::HOST, host),
                (field::SUBJECT_USER_NAME, "bob"),
                (field::SUBJECT_DOMAIN_NAME, "CORP"),
                (field::PARENT_PROCESS_NAME, "C:\\Windows\\explorer.exe"),
            ],
        )
    }

    #[test]
    fn descriptor_declares_fields_prefilter_and_any_of() {
        let d = Task::<RareProcess>::describe();
        assert_eq!(d.name, NAME);
        assert_eq!(d.fields[1], "EventData.Image");
        assert_eq!(d.prefilter.len(), 1);
        assert_eq!(d.prefilter[0].values, ["1", "4688"]);
        assert_eq!(d.any_of.len(), 1);
        let any: Vec<(&str, MatchOp)> = d.any_of[0]
            .iter()
            .map(|p| (p.field.as_str(), p.op))
            .collect();
        assert_eq!(
            any,
            [
                ("EventData.Image", MatchOp::Exists),
                ("EventData.NewProcessName", MatchOp::Exists)
            ]
        );
        assert_eq!(d.techniques, TECHNIQUES);
    }

    #[test]
    fn parameters_have_defaults_and_clear_errors() {
        assert_eq!(
            RareProcess::config(&Params::default()),
            Ok(Config::default())
        );
        let p =
            Params::from_pairs([("max_hosts", "5"), ("report_user_writable", "false")]).unwrap();
        assert_eq!(
            RareProcess::config(&p),
            Ok(Config {
                max_hosts: 5,
                report_user_writable: false,
                report_first_seen: true,
            })
        );
        let mut task = Task::<RareProcess>::new();
        assert_eq!(
            task.init(params(&[("max_hosts", "0")])).unwrap_err(),
            "parameter `max_hosts` must be an integer from 1 to 10000, got `0`"
        );
        assert!(
            task.init(params(&[("report_user_writable", "maybe")]))
                .unwrap_err()
                .contains("`report_user_writable`")
        );
        assert_eq!(
            task.init(params(&[("hosts", "5")])).unwrap_err(),
            "unknown parameter `hosts`; this module accepts `max_hosts`, `report_user_writable`, `report_first_seen`"
        );
    }

    #[test]
    fn reads_sysmon_and_security_process_starts() {
        let mut normalisers = Normalisers::default();
        let mut stacker = Stacker::new(Config::default());
        let mut read = |event: &Event| {
            process_start(event, &mut normalisers, &mut stacker).map(|r| match r {
                Reading::Start(s) => Some((s.image, s.host, s.offset)),
                Reading::WithoutHost => None,
            })
        };
        let first = sysmon(1, "WS01.corp.example", "%windir%\\System32\\cmd.exe");
        let second = security(2, "WS02", "C:\\Windows\\System32\\cmd.exe");
        let third = sysmon(3, "ws01", "C:\\Windows\\explorer.exe");
        // One image in two spellings, two hosts, then a new image on the
        // first host again: ids in order of first sight.
        assert_eq!(read(&first), Some(Some((0, 0, 1))));
        assert_eq!(read(&second), Some(Some((0, 1, 2))));
        assert_eq!(read(&third), Some(Some((1, 0, 3))));
        // Another event id, or no image: not a start. No host: skipped.
        let other = event(4, &[(field::EVENT_ID, "3"), (field::IMAGE, "x.exe")]);
        assert_eq!(read(&other), None);
        assert_eq!(read(&event(5, &[(field::EVENT_ID, "1")])), None);
        let no_host = event(6, &[(field::EVENT_ID, "1"), (field::IMAGE, "x.exe")]);
        assert_eq!(read(&no_host), Some(None));
        // A blank or `-` image is none; a host of dots or `-` is none, and
        // the next host field is read.
        for image in [" - ", "  "] {
            assert_eq!(read(&sysmon(7, "WS01", image)), None, "{image:?}");
        }
        assert_eq!(read(&sysmon(8, "..", "C:\\x.exe")), Some(None));
        let fallback = event(
            9,
            &[
                (field::EVENT_ID, "1"),
                (field::IMAGE, "C:\\x.exe"),
                (field::COMPUTER, "-"),
                (field::HOSTNAME, ".."),
                (field::HOST, "WS02.corp"),
            ],
        );
        // (`x.exe` of the start without a host has id 2.)
        assert_eq!(read(&fallback), Some(Some((3, 1, 9))));
        assert_eq!(stacker.image_id("c:\\windows\\system32\\cmd.exe"), 0);
        assert_eq!(stacker.image_id("c:\\x.exe"), 3);
        assert_eq!(stacker.host_id("ws02"), 1);

        let user = details(&first).user.map(|u| u.to_string());
        assert_eq!(user.as_deref(), Some("CORP\\alice"));
        let user = details(&second).user.map(|u| u.to_string());
        assert_eq!(user.as_deref(), Some("CORP\\bob"));
        let parent = details(&second).parent_image;
        assert_eq!(parent, Some("C:\\Windows\\explorer.exe"));
    }

    #[test]
    fn tasks_over_several_shards_merge_into_the_rare_tail() {
        let mut partials = Vec::new();
        for shard in 0..4 {
            let mut task = Task::<RareProcess>::new();
            task.init(vec![]).unwrap();
            let mut batch = Vec::new();
            for h in 0..3 {
                let host = format!("S{shard}H{h}.corp.example");
                // The same binary, logged by Sysmon on some hosts and by
                // 4688 on others, in different spellings.
                batch.push(sysmon(0, &host, "C:\\Windows\\System32\\svchost.exe"));
                batch.push(security(
                    1,
                    &host,
                    "\\\\?\\C:\\WINDOWS\\system32\\svchost.exe",
                ));
            }
            if shard == 2 {
                batch.push(sysmon(
                    9,
                    "S2H1",
                    "C:\\Users\\carol\\AppData\\Roaming\\svc\\svchost.exe",
                ));
            }
            let findings = task.scan(batch).unwrap();
            assert!(findings.is_empty(), "findings come at the end");
            let output = task.finish().unwrap();
            if shard == 2 {
                assert_eq!(output.findings.len(), 1, "{:#?}", output.findings);
                assert_eq!(output.findings[0].entity, "host:s2h1");
            } else {
                assert!(output.findings.is_empty(), "{:#?}", output.findings);
            }
            partials.extend(output.aggregates);
        }
        let merged = merge(partials).unwrap();
        let AggregateValue::Stack(stack) = &merged[stacker::AGGREGATE_IMAGES] else {
            panic!("a stack")
        };
        let rare: Vec<&str> = stack.rare().into_iter().map(|(image, _)| image).collect();
        assert_eq!(rare, ["c:\\users\\*\\appdata\\roaming\\svc\\svchost.exe"]);
        assert_eq!(stack.max_hosts, 2);
        assert!(stack.entries["c:\\windows\\system32\\svchost.exe"].common);
        assert_eq!(
            stack.entries["c:\\windows\\system32\\svchost.exe"].events,
            24
        );
    }

    #[test]
    fn a_scheduled_run_reports_images_its_history_never_saw() {
        let run = |history: Option<contract::aggregate::Merged>, batch: Vec<Event>| {
            match history {
                Some(merged) => quarry_sdk::history::install_for_tests(2, merged),
                None => quarry_sdk::history::clear_for_tests(),
            }
            let mut task = Task::<RareProcess>::new();
            task.init(params(&[("report_user_writable", "false")]))
                .unwrap();
            task.scan(batch).unwrap();
            task.finish().unwrap()
        };
        // Day 1: no history, nothing is "first seen".
        let day1 = run(
            None,
            vec![
                sysmon(0, "H1", "C:\\Windows\\System32\\svchost.exe"),
                sysmon(1, "H2", "C:\\Windows\\System32\\cmd.exe"),
            ],
        );
        assert!(day1.findings.is_empty(), "{:#?}", day1.findings);
        let history = merge(day1.aggregates).unwrap();
        // Day 3: one binary new to the fleet (spelt differently from the
        // known ones would not matter: paths are normalised first).
        let day3 = run(
            Some(history),
            vec![
                security(5, "H1", "C:\\WINDOWS\\system32\\cmd.exe"),
                sysmon(6, "H3", "C:\\Users\\dave\\Downloads\\tool.exe"),
            ],
        );
        quarry_sdk::history::clear_for_tests();
        let rules: Vec<(&str, &str)> = day3
            .findings
            .iter()
            .map(|f| (f.rule.as_str(), f.entity.as_str()))
            .collect();
        assert_eq!(rules, [(stacker::RULE_FIRST_SEEN, "host:h3")]);
        let evidence: std::collections::BTreeMap<_, _> = day3.findings[0]
            .evidence
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(evidence["image"], "c:\\users\\*\\downloads\\tool.exe");
        assert_eq!(evidence["baseline_runs"], "2");
    }
}
