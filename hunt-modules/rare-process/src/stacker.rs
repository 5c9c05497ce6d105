//! The per-task state, in plain Rust: no host calls, so it is unit-tested on
//! the build machine.
//!
//! Every process start adds (image, host) to a [`Stack`] that the
//! coordinator merges across all tasks of the hunt; its rare tail (images
//! on at most `max_hosts` hosts of the whole hunt) is the module's main
//! result. The stacker also remembers, per image, the hosts it ran on in
//! this task and the first start, so that [`Stacker::finish`] can report
//! images that ran on exactly one host of this task from a user-writable
//! location, when the task saw enough hosts for "one host" to mean
//! something.

use std::collections::BTreeSet;

use hashbrown::HashMap;

use quarry_sdk::time::format_rfc3339_ms;
use quarry_sdk::{Finding, FindingBuilder, Severity, Stack};

use crate::paths::{file_name, user_writable_location};

/// Rule id of the per-task finding.
pub const RULE_SINGLE_HOST_USER_WRITABLE: &str = "rare-process/single-host-user-writable";
/// Rule of the finding for an image no earlier run of the schedule saw.
pub const RULE_FIRST_SEEN: &str = "rare-process/first-seen-on-fleet";
/// Name of the stack aggregate.
pub const AGGREGATE_IMAGES: &str = "rare_process_images";
/// ATT&CK: User Execution: Malicious File; Masquerading.
pub const TECHNIQUES: [&str; 2] = ["T1204.002", "T1036"];

/// Fewest hosts a task must see before an image on one of them is "on one
/// host": in a shard of one or two hosts every image is.
pub const MIN_TASK_HOSTS_FOR_FINDINGS: usize = 3;
/// Most distinct images tracked per task; beyond, new images still go into
/// the stack but get no per-task finding. Bounds memory when temporary
/// file names make every installer run a new image.
pub const MAX_TRACKED_IMAGES: usize = 200_000;
/// Most findings per task: a shard where everything looks odd is better
/// read through the merged stack than through thousands of findings.
pub const MAX_FINDINGS: usize = 500;
/// Longest command line kept in evidence (characters).
const MAX_COMMAND_LINE_CHARS: usize = 2_000;

/// Tuning, from the hunt's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The stack's post-merge threshold: images on at most this many hosts
    /// of the hunt are rare.
    pub max_hosts: u32,
    /// Whether per-task findings are reported.
    pub report_user_writable: bool,
    /// Whether images the schedule's history never saw are reported.
    pub report_first_seen: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_hosts: 2,
            report_user_writable: true,
            report_first_seen: true,
        }
    }
}

/// The images a schedule's earlier runs saw (from the merged
/// [`AGGREGATE_IMAGES`] stack of its history).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownImages {
    /// Earlier runs merged.
    pub runs: u32,
    /// Normalised image paths.
    pub images: BTreeSet<String>,
}

/// One process start, as read from an event: its image and host by the
/// ids the task's [`Stacker`] gave their normalised forms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessStart<'a> {
    /// Normalised image path ([`crate::paths::normalise_image`]), by
    /// [`Stacker::image_id`].
    pub image: ImageId,
    /// The image as logged.
    pub raw_image: &'a str,
    /// Normalised host ([`crate::paths::normalise_host`]), by
    /// [`Stacker::host_id`].
    pub host: HostId,
    /// Event time, ms since the epoch.
    pub timestamp_ms: i64,
    /// Shard offset.
    pub offset: u64,
}

/// What else a process start logged: evidence for an image's first start,
/// so read only for that one ([`Stacker::observe`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details<'a> {
    /// Command line, when logged.
    pub command_line: Option<&'a str>,
    /// Parent image, when logged.
    pub parent_image: Option<&'a str>,
    /// User, when logged.
    pub user: Option<User<'a>>,
}

/// The user of a process start, as logged. Kept in pieces: only the first
/// start of an image needs it as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User<'a> {
    /// Sysmon's `User` (already `DOMAIN\name`).
    Name(&'a str),
    /// 4688's subject, `DOMAIN\name`.
    InDomain {
        /// `SubjectDomainName`.
        domain: &'a str,
        /// `SubjectUserName`.
        name: &'a str,
    },
}

impl std::fmt::Display for User<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            User::Name(name) => f.write_str(name),
            User::InDomain { domain, name } => write!(f, "{domain}\\{name}"),
        }
    }
}

/// A normalised image of the task ([`Stacker::image_id`]).
pub type ImageId = usize;
/// A normalised host of the task ([`Stacker::host_id`]).
pub type HostId = usize;

/// What the task knows of one image: its stack entry, counted here and
/// stacked in [`Stacker::finish`] (one map lookup per start instead of
/// the stack's ordered maps), and the details findings need.
#[derive(Debug, Default)]
struct Image {
    events: u64,
    /// Its hosts, sorted, up to `max_hosts + 1`: one more is common.
    hosts: Vec<HostId>,
    /// `None` for an image beyond [`MAX_TRACKED_IMAGES`].
    seen: Option<Box<Seen>>,
}

/// Per-task details of a tracked image.
#[derive(Clone, Debug)]
struct Seen {
    /// Hosts of this task; at most two are kept (one is all that matters).
    hosts: Vec<HostId>,
    events: u64,
    first_ms: i64,
    last_ms: i64,
    /// The first start's details, for evidence.
    raw_image: String,
    command_line: Option<String>,
    parent_image: Option<String>,
    user: Option<String>,
    offsets: Vec<u64>,
}

/// Most offsets per image in a finding.
const MAX_OFFSETS: usize = 20;

/// What a task returns.
#[derive(Debug)]
pub struct Report {
    /// Per-task findings, in image order.
    pub findings: Vec<Finding>,
    /// The stack, for the coordinator to merge.
    pub stack: Stack,
    /// Distinct hosts in the task.
    pub hosts: usize,
    /// Process starts stacked.
    pub starts: u64,
    /// Whether [`MAX_TRACKED_IMAGES`] was reached.
    pub images_truncated: bool,
}

/// The per-task state.
#[derive(Debug)]
pub struct Stacker {
    config: Config,
    known: Option<KnownImages>,
    image_ids: HashMap<String, ImageId>,
    images: Vec<Image>,
    /// Images with details ([`Image::seen`]).
    tracked: usize,
    host_ids: HashMap<String, HostId>,
    host_names: Vec<Box<str>>,
    starts: u64,
    images_truncated: bool,
}

impl Stacker {
    /// An empty stacker.
    pub fn new(config: Config) -> Self {
        let config = Config {
            max_hosts: config.max_hosts.max(1),
            ..config
        };
        Stacker {
            config,
            known: None,
            image_ids: HashMap::new(),
            images: Vec::new(),
            tracked: 0,
            host_ids: HashMap::new(),
            host_names: Vec::new(),
            starts: 0,
            images_truncated: false,
        }
    }

    /// Compares with the images of a schedule's earlier runs: those not
    /// among them are reported as first seen.
    pub fn with_history(mut self, known: KnownImages) -> Self {
        self.known = Some(known);
        self
    }

    /// The id of a normalised image, new or seen before.
    pub fn image_id(&mut self, image: &str) -> ImageId {
        if let Some(&id) = self.image_ids.get(image) {
            return id;
        }
        let id = self.images.len();
        self.images.push(Image::default());
        self.image_ids.insert(image.to_owned(), id);
        id
    }

    /// The id of a normalised host, new or seen before.
    pub fn host_id(&mut self, host: &str) -> HostId {
        if let Some(&id) = self.host_ids.get(host) {
            return id;
        }
        let id = self.host_names.len();
        self.host_names.push(host.into());
        self.host_ids.insert(host.to_owned(), id);
        id
    }

    /// Adds one process start, whose ids this stacker gave; `details` is
    /// called for an image's first start only.
    ///
    /// # Panics
    /// On an image id this stacker did not give.
    pub fn observe<'d>(&mut self, start: &ProcessStart<'_>, details: impl FnOnce() -> Details<'d>) {
        self.starts += 1;
        let host = start.host;
        let image = &mut self.images[start.image];
        image.events += 1;
        if image.hosts.len() <= self.config.max_hosts as usize
            && let Err(at) = image.hosts.binary_search(&host)
        {
            image.hosts.insert(at, host);
        }
        match &mut image.seen {
            Some(seen) => {
                if seen.hosts.len() < 2 && !seen.hosts.contains(&host) {
                    seen.hosts.push(host);
                }
                seen.events += 1;
                seen.first_ms = seen.first_ms.min(start.timestamp_ms);
                seen.last_ms = seen.last_ms.max(start.timestamp_ms);
                if seen.offsets.len() < MAX_OFFSETS {
                    seen.offsets.push(start.offset);
                }
            }
            // An image first seen once the tracking was full.
            None if image.events > 1 => {}
            None if self.tracked >= MAX_TRACKED_IMAGES => self.images_truncated = true,
            None => {
                self.tracked += 1;
                let details = details();
                image.seen = Some(Box::new(Seen {
                    hosts: vec![host],
                    events: 1,
                    first_ms: start.timestamp_ms,
                    last_ms: start.timestamp_ms,
                    raw_image: start.raw_image.to_owned(),
                    command_line: details
                        .command_line
                        .map(|c| c.chars().take(MAX_COMMAND_LINE_CHARS).collect()),
                    parent_image: details.parent_image.map(str::to_owned),
                    user: details.user.map(|u| u.to_string()),
                    offsets: vec![start.offset],
                }));
            }
        }
    }

    /// The stack and the per-task findings.
    pub fn finish(self) -> Report {
        let task_hosts = self.host_names.len();
        let host_names = &self.host_names;
        let mut by_id = self.images;
        let mut images: Vec<(String, Image)> = self
            .image_ids
            .into_iter()
            .map(|(name, id)| (name, std::mem::take(&mut by_id[id])))
            // An image read from a start that had no host was never
            // observed: it is in no stack.
            .filter(|(_, image)| image.events > 0)
            .collect();
        images.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut stack = Stack::new(AGGREGATE_IMAGES, self.config.max_hosts);
        for (name, image) in &images {
            let hosts = image.hosts.iter().map(|&h| &*host_names[h]);
            stack.observe_many(name, hosts, image.events);
        }
        let tracked = || {
            images
                .iter()
                .filter_map(|(name, image)| Some((&**name, image.seen.as_deref()?)))
        };
        let hosts_of = |seen: &Seen| {
            let mut hosts: Vec<&str> = seen.hosts.iter().map(|&h| &*host_names[h]).collect();
            hosts.sort_unstable();
            hosts
        };
        let mut findings = Vec::new();
        if self.config.report_user_writable && task_hosts >= MIN_TASK_HOSTS_FOR_FINDINGS {
            for (image, seen) in tracked() {
                if findings.len() >= MAX_FINDINGS {
                    break;
                }
                if seen.hosts.len() != 1 {
                    continue;
                }
                let Some(location) = user_writable_location(image) else {
                    continue;
                };
                findings.push(finding(image, seen, &hosts_of(seen), location, task_hosts));
            }
        }
        if self.config.report_first_seen
            && let Some(known) = &self.known
        {
            for (image, seen) in tracked() {
                if findings.len() >= MAX_FINDINGS {
                    break;
                }
                if !known.images.contains(image) {
                    findings.push(first_seen(image, seen, &hosts_of(seen), known.runs));
                }
            }
        }
        Report {
            findings,
            stack,
            hosts: task_hosts,
            starts: self.starts,
            images_truncated: self.images_truncated,
        }
    }
}

fn finish_finding(mut finding: FindingBuilder, seen: &Seen) -> Finding {
    if let Some(command_line) = &seen.command_line {
        finding = finding.evidence("command_line", command_line);
    }
    if let Some(parent) = &seen.parent_image {
        finding = finding.evidence("parent_image", parent);
    }
    if let Some(user) = &seen.user {
        finding = finding.evidence("user", user);
    }
    finding
        .techniques(TECHNIQUES)
        .offsets(seen.offsets.iter().copied())
        .build()
}

/// An image no earlier run of the schedule saw on any host.
fn first_seen(image: &str, seen: &Seen, hosts: &[&str], runs: u32) -> Finding {
    let host = hosts.first().copied().unwrap_or("unknown");
    let finding = Finding::builder(
        RULE_FIRST_SEEN,
        format!(
            "{} ran for the first time on the fleet (not in {runs} earlier run(s) of the schedule), on {host}",
            file_name(image)
        ),
    )
    // New software lands every day; a binary new to the whole fleet is
    // still worth a look, more so from a user-writable place.
    .severity(if user_writable_location(image).is_some() {
        Severity::Medium
    } else {
        Severity::Low
    })
    .confidence(50)
    .entity(format!("host:{host}"))
    .timestamp_ms(seen.first_ms)
    .evidence("image", image)
    .evidence("logged_image", &seen.raw_image)
    .evidence("host", host)
    .evidence("hosts", hosts.join(","))
    .evidence("baseline_runs", runs)
    .evidence("starts", seen.events)
    .evidence("first_seen", format_rfc3339_ms(seen.first_ms));
    finish_finding(finding, seen)
}

fn finding(image: &str, seen: &Seen, hosts: &[&str], location: &str, task_hosts: usize) -> Finding {
    let host = hosts.first().copied().unwrap_or("unknown");
    let finding = Finding::builder(
        RULE_SINGLE_HOST_USER_WRITABLE,
        format!(
            "{} ran from {location} on {host} only ({task_hosts} hosts in the shard)",
            file_name(image)
        ),
    )
    // Installers and per-user updaters do this too; it is a lead for the
    // hunter next to the merged stack, not an alert.
    .severity(Severity::Low)
    .confidence(35)
    .entity(format!("host:{host}"))
    .timestamp_ms(seen.first_ms)
    .evidence("image", image)
    .evidence("logged_image", &seen.raw_image)
    .evidence("host", host)
    .evidence("location", location)
    .evidence("hosts_in_shard", task_hosts)
    .evidence("starts", seen.events)
    .evidence("first_seen", format_rfc3339_ms(seen.first_ms))
    .evidence("last_seen", format_rfc3339_ms(seen.last_ms));
    finish_finding(finding, seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_sdk::contract::AggregateValue;
    use quarry_sdk::{Aggregate, merge};

    /// Observes a start of `image` on `host`.
    fn observe(stacker: &mut Stacker, image: &str, host: &str, offset: u64) {
        observe_with(stacker, image, host, offset, details);
    }

    fn observe_with(
        stacker: &mut Stacker,
        image: &str,
        host: &str,
        offset: u64,
        details: impl FnOnce() -> Details<'static>,
    ) {
        let start = ProcessStart {
            image: stacker.image_id(image),
            raw_image: "logged",
            host: stacker.host_id(host),
            timestamp_ms: 1_700_000_000_000 + offset as i64,
            offset,
        };
        stacker.observe(&start, details);
    }

    fn details() -> Details<'static> {
        Details {
            command_line: Some("x.exe /run"),
            parent_image: Some("c:\\windows\\explorer.exe"),
            user: Some(User::Name("CORP\\alice")),
        }
    }

    const COMMON: &str = "c:\\windows\\system32\\svchost.exe";
    const DROPPED: &str = "c:\\users\\*\\appdata\\roaming\\upd\\updater.exe";

    #[test]
    fn single_host_user_writable_images_are_reported_per_task() {
        let mut stacker = Stacker::new(Config::default());
        let mut offset = 0;
        for host in ["ws01", "ws02", "ws03"] {
            for _ in 0..3 {
                observe(&mut stacker, COMMON, host, offset);
                offset += 1;
            }
        }
        observe(&mut stacker, DROPPED, "ws02", 100);
        observe(&mut stacker, DROPPED, "ws02", 101);
        // On one host, but not user-writable: the stack shows it, no finding.
        observe(&mut stacker, "c:\\program files\\odd\\odd.exe", "ws03", 102);
        // User-writable, but on two hosts of the task.
        observe(&mut stacker, "c:\\users\\public\\a.exe", "ws01", 103);
        observe(&mut stacker, "c:\\users\\public\\a.exe", "ws02", 104);
        let report = stacker.finish();
        assert_eq!(report.hosts, 3);
        assert_eq!(report.starts, 14);
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        let f = &report.findings[0];
        assert_eq!(f.rule, RULE_SINGLE_HOST_USER_WRITABLE);
        assert_eq!(f.severity, Severity::Low);
        assert_eq!(f.entity, "host:ws02");
        assert_eq!(f.evidence_value("image"), Some(DROPPED));
        assert_eq!(f.evidence_value("location"), Some("a user's AppData"));
        assert_eq!(f.evidence_value("starts"), Some("2"));
        assert_eq!(f.evidence_value("user"), Some("CORP\\alice"));
        assert_eq!(f.offsets, [100, 101]);
    }

    #[test]
    fn details_are_read_for_an_image_first_start_only() {
        let mut stacker = Stacker::new(Config::default());
        let mut reads = 0;
        for offset in 0..5 {
            observe_with(&mut stacker, COMMON, "ws01", offset, || {
                reads += 1;
                details()
            });
        }
        observe_with(&mut stacker, DROPPED, "ws02", 9, || {
            reads += 1;
            details()
        });
        assert_eq!(reads, 2);
    }

    #[test]
    fn small_tasks_and_disabled_findings_report_only_the_stack() {
        let mut stacker = Stacker::new(Config::default());
        observe(&mut stacker, DROPPED, "ws01", 0);
        observe(&mut stacker, COMMON, "ws02", 1);
        stacker.image_id("c:\\never\\observed.exe");
        let report = stacker.finish();
        assert!(report.findings.is_empty(), "two hosts are too few");
        assert_eq!(report.stack.len(), 2);

        let mut stacker = Stacker::new(Config {
            report_user_writable: false,
            ..Config::default()
        });
        for (i, host) in ["a", "b", "c"].iter().enumerate() {
            observe(&mut stacker, COMMON, host, i as u64);
        }
        observe(&mut stacker, DROPPED, "a", 9);
        assert!(stacker.finish().findings.is_empty());
    }

    #[test]
    fn merged_stacks_of_several_tasks_keep_only_the_rare_tail() {
        // Three shards of three hosts each. The planted image runs on one
        // host; `tool.exe` on one host in each of two shards (2 hosts in
        // all: still rare with max_hosts 2); the common images everywhere.
        let mut partials: Vec<Aggregate> = Vec::new();
        for shard in 0..3 {
            let mut stacker = Stacker::new(Config::default());
            for h in 0..3 {
                let host = format!("s{shard}-h{h}");
                observe(&mut stacker, COMMON, &host, 0);
                observe(&mut stacker, "c:\\windows\\explorer.exe", &host, 1);
            }
            if shard < 2 {
                observe(
                    &mut stacker,
                    "c:\\tools\\tool.exe",
                    &format!("s{shard}-h0"),
                    2,
                );
            }
            if shard == 1 {
                observe(&mut stacker, DROPPED, "s1-h2", 3);
            }
            partials.push(stacker.finish().stack.into());
        }
        let merged = merge(partials).expect("one kind per name");
        let AggregateValue::Stack(stack) = &merged[AGGREGATE_IMAGES] else {
            panic!("a stack")
        };
        let rare: Vec<(&str, usize)> = stack
            .rare()
            .into_iter()
            .map(|(image, entry)| (image, entry.hosts.len()))
            .collect();
        assert_eq!(rare, [(DROPPED, 1), ("c:\\tools\\tool.exe", 2)]);
        assert_eq!(stack.common_values(), 2);
    }

    #[test]
    fn image_tracking_is_bounded() {
        let mut stacker = Stacker::new(Config::default());
        for i in 0..(MAX_TRACKED_IMAGES + 10) {
            observe(&mut stacker, &format!("c:\\temp\\{i}.exe"), "h", i as u64);
        }
        assert_eq!(stacker.tracked, MAX_TRACKED_IMAGES);
        let report = stacker.finish();
        assert!(report.images_truncated);
        assert_eq!(report.stack.len(), MAX_TRACKED_IMAGES + 10);
    }
}
