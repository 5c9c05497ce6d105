//! One configuration file format for the two server roles, `quarry
//! coordinator` and `quarry worker` (its run mode, not `worker ingest`).
//!
//! A TOML file. Keys are the commands' long flag names (`data-dir`,
//! `node-id`, `peer`); a value is what the flag takes, as a TOML string,
//! integer or boolean (durations as the flags take them: `"30d"`), and an
//! array for a repeatable flag. Top-level keys apply to whichever role reads
//! the file; the `[coordinator]` and `[worker]` tables to that role only,
//! over the top-level keys. So one file can configure a node running either
//! role, and a file for one role needs no table.
//!
//! Precedence, for every setting: a flag on the command line, then the
//! file, then the `QUARRY_*` environment variable, then the built-in
//! default. It is clap that applies it: the file's values become the
//! flags' defaults, and the environment variable of a flag that the file
//! sets is dropped ([`Settings::apply`]).
//!
//! The keys are not listed here: they are read from the clap command
//! ([`Schema::new`]), so a new flag is a new key, checked with the flag's
//! own value parser, documented in `quarry config example` with its help
//! text. Only [`CONFIG_ID`] and [`PRINT_CONFIG_ID`] are left out.

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Args, Command, CommandFactory, FromArgMatches, Subcommand};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use toml::de::{DeTable, DeValue};

/// The id of the `--config FILE` argument of both server commands.
pub const CONFIG_ID: &str = "config";
/// The id of their `--print-config` switch.
pub const PRINT_CONFIG_ID: &str = "print_config";
/// Arguments of the server commands that are no settings, so no file keys.
const NOT_SETTINGS: [&str; 4] = [CONFIG_ID, PRINT_CONFIG_ID, "help", "version"];

/// `--config FILE` and `--print-config`, flattened into both server
/// commands.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Read settings from this TOML file. Its keys are this command's long
    /// flags (`data-dir = "/var/lib/quarry"`, `peer = ["2=https://..."]`),
    /// at the top level or in a table named after the command
    /// (`[coordinator]`, `[worker]`), which wins over the top level. For
    /// each setting, the flag on the command line comes first, then this
    /// file, then the setting's QUARRY_* environment variable, then the
    /// built-in default. `quarry config example ROLE` prints a complete
    /// file, `quarry config check FILE` checks one (docs/configuration.md).
    #[arg(long, value_name = "FILE", env = "QUARRY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the settings this command would run with, each with where it
    /// comes from (flag, file, environment, default), and exit: a
    /// configuration file itself.
    #[arg(long)]
    pub print_config: bool,
}

/// A server role: the subcommand of that name reads the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `quarry coordinator`: top-level keys and `[coordinator]`.
    Coordinator,
    /// `quarry worker` (run mode): top-level keys and `[worker]`.
    Worker,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Coordinator, Role::Worker];

    /// The subcommand's name, which is also the table's.
    pub fn name(self) -> &'static str {
        match self {
            Role::Coordinator => "coordinator",
            Role::Worker => "worker",
        }
    }

    fn from_name(name: &str) -> Option<Role> {
        Self::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What can go wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the configuration file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// The file was read; these are its problems, in line order.
    #[error("{}", lines(problems))]
    Invalid { problems: Vec<Problem> },
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem of a file, at a line: shown as `FILE:LINE: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path, self.line, self.message)
    }
}

/// One setting of a role: a long flag of its command, or a global flag of
/// the root command (`--log`).
#[derive(Clone, Debug)]
pub struct Key {
    /// The long flag without `--`: the file key.
    pub name: String,
    /// The clap argument id.
    pub id: String,
    /// Its environment variable.
    pub env: Option<String>,
    /// Repeatable: an array in the file.
    pub multiple: bool,
    /// A flag without a value: `true` or `false` in the file.
    pub switch: bool,
    pub required: bool,
    /// Defined on the root command (a global flag such as `--log`).
    on_root: bool,
    pub help: String,
    pub defaults: Vec<String>,
    value_name: String,
    /// The keys it cannot be used with (`join` and `peer`).
    conflicts: Vec<String>,
}

impl Key {
    fn of(arg: &Arg, on_root: bool) -> Option<Key> {
        let id = arg.get_id().as_str();
        if NOT_SETTINGS.contains(&id) || arg.is_positional() {
            return None;
        }
        let name = arg.get_long()?;
        let action = arg.get_action();
        if matches!(
            action,
            ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version
        ) {
            return None;
        }
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        Some(Key {
            name: name.to_owned(),
            id: id.to_owned(),
            env: arg.get_env().map(|e| e.to_string_lossy().into_owned()),
            multiple: matches!(action, ArgAction::Append)
                || arg.get_num_args().is_some_and(|n| n.max_values() > 1),
            switch: matches!(action, ArgAction::SetTrue | ArgAction::SetFalse),
            required: arg.is_required_set(),
            on_root,
            help,
            defaults: arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect(),
            value_name: arg
                .get_value_names()
                .and_then(|names| names.first())
                .map(ToString::to_string)
                .unwrap_or_else(|| id.to_uppercase()),
            conflicts: Vec::new(),
        })
    }

    fn conflicts_with(&self, other: &Key) -> bool {
        self.conflicts.contains(&other.name) || other.conflicts.contains(&self.name)
    }
}

/// One role's keys, and a command that checks a value with its flag's own
/// parser.
struct RoleKeys {
    role: Role,
    keys: Vec<Key>,
    checker: Command,
}

impl RoleKeys {
    fn key(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// `Err(why)` when the flag would refuse `text`.
    fn check_value(&self, key: &Key, text: &str) -> Result<(), String> {
        if key.switch {
            return match text {
                "true" | "false" => Ok(()),
                _ => Err(format!("invalid value {text:?}: expected true or false")),
            };
        }
        let arg = format!("--{}={text}", key.name);
        match self.checker.clone().try_get_matches_from([arg]) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("invalid value {text:?}: {}", cause(&e))),
        }
    }
}

/// Why clap refused a value, without its usage text.
fn cause(err: &clap::Error) -> String {
    use std::error::Error as _;
    if let Some(source) = err.source() {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        return format!("expected one of {}", valid.join(", "));
    }
    let rendered = err.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The settings of the server roles, read from the clap command.
pub struct Schema {
    roles: Vec<RoleKeys>,
}

impl Schema {
    /// The keys of each role found in `root` (a role without a subcommand
    /// of its name has none).
    pub fn new(root: &Command) -> Schema {
        let globals: Vec<&Arg> = root.get_arguments().filter(|a| a.is_global_set()).collect();
        let mut roles = Vec::new();
        for role in Role::ALL {
            let Some(sub) = root.find_subcommand(role.name()) else {
                continue;
            };
            let mut keys: Vec<Key> = Vec::new();
            let args = globals
                .iter()
                .map(|a| (*a, true))
                .chain(sub.get_arguments().map(|a| (a, false)));
            for (arg, on_root) in args {
                if let Some(mut key) = Key::of(arg, on_root)
                    && !keys.iter().any(|k| k.name == key.name)
                {
                    if !on_root {
                        key.conflicts = sub
                            .get_arg_conflicts_with(arg)
                            .iter()
                            .filter_map(|a| a.get_long().map(str::to_owned))
                            .collect();
                    }
                    keys.push(key);
                }
            }
            // Every value is checked alone: nothing is required, nothing
            // comes from the environment.
            let mut checker = sub
                .clone()
                .no_binary_name(true)
                .subcommand_required(false)
                .mut_args(|a| a.required(false).env(None));
            for arg in &globals {
                if !sub.get_arguments().any(|a| a.get_id() == arg.get_id()) {
                    checker = checker.arg((*arg).clone().global(false).required(false).env(None));
                }
            }
            roles.push(RoleKeys {
                role,
                keys,
                checker,
            });
        }
        Schema { roles }
    }

    fn role(&self, role: Role) -> Option<&RoleKeys> {
        self.roles.iter().find(|r| r.role == role)
    }

    /// A role's keys, in the order of its `--help`.
    pub fn keys(&self, role: Role) -> &[Key] {
        self.role(role).map_or(&[], |r| &r.keys)
    }

    fn owner(&self, name: &str) -> Option<Role> {
        self.roles
            .iter()
            .find(|r| r.key(name).is_some())
            .map(|r| r.role)
    }

    /// The roles a file configures when no role is named: those with a
    /// table; in a file without one, those that have every top-level key
    /// (both, when none has them all).
    fn roles_read(&self, file: &ConfigFile) -> Vec<Role> {
        let present: Vec<Role> = self
            .roles
            .iter()
            .map(|r| r.role)
            .filter(|role| file.tables.iter().any(|t| t.name == role.name()))
            .collect();
        if !present.is_empty() {
            return present;
        }
        let known: Vec<&Entry> = file
            .top
            .iter()
            .filter(|e| self.owner(&e.key).is_some())
            .collect();
        let accepting: Vec<Role> = self
            .roles
            .iter()
            .filter(|r| known.iter().all(|e| r.key(&e.key).is_some()))
            .map(|r| r.role)
            .collect();
        if accepting.is_empty() {
            self.roles.iter().map(|r| r.role).collect()
        } else {
            accepting
        }
    }

    /// Every problem of `file` and, per role checked, the settings it
    /// gives: `role`'s alone, or those of every role the file configures.
    pub fn check(&self, file: &ConfigFile, role: Option<Role>) -> Report {
        let mut problems = Vec::new();
        let role_names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
        for table in &file.tables {
            if Role::from_name(&table.name).is_none() {
                let hint = closest(&table.name, role_names.iter().copied())
                    .map(|h| format!("; did you mean [{h}]?"))
                    .unwrap_or_default();
                problems.push(
                    file.problem(table.line, format!("unknown table [{}]{hint}", table.name)),
                );
            }
        }
        let all_keys: Vec<&str> = self
            .roles
            .iter()
            .flat_map(|r| r.keys.iter().map(|k| k.name.as_str()))
            .collect();
        for entry in &file.top {
            if Role::from_name(&entry.key).is_some() {
                problems.push(file.problem(
                    entry.line,
                    format!("`{0}` must be a table: [{0}]", entry.key),
                ));
            } else if self.owner(&entry.key).is_none() {
                let hint = closest(&entry.key, all_keys.iter().copied())
                    .map(|h| format!("; did you mean `{h}`?"))
                    .unwrap_or_default();
                problems
                    .push(file.problem(entry.line, format!("unknown key `{}`{hint}", entry.key)));
            }
        }
        let roles = match role {
            Some(role) => vec![role],
            None => self.roles_read(file),
        };
        let mut settings = Vec::new();
        for role in roles {
            let Some(keys) = self.role(role) else {
                continue;
            };
            let mut values: Vec<Setting> = Vec::new();
            for entry in &file.top {
                match keys.key(&entry.key) {
                    Some(key) => {
                        if let Some(setting) = file.setting(keys, key, entry, &mut problems) {
                            values.push(setting);
                        }
                    }
                    None => {
                        if let Some(owner) = self.owner(&entry.key) {
                            problems.push(file.problem(
                                entry.line,
                                format!(
                                    "`{}` is not a {role} setting: put it in [{owner}]",
                                    entry.key
                                ),
                            ));
                        }
                    }
                }
            }
            for table in file.tables.iter().filter(|t| t.name == role.name()) {
                for entry in &table.entries {
                    let Some(key) = keys.key(&entry.key) else {
                        let message = match self.owner(&entry.key) {
                            Some(owner) => format!(
                                "unknown key `{}` in [{role}]: it is a [{owner}] setting",
                                entry.key
                            ),
                            None => {
                                let hint =
                                    closest(&entry.key, keys.keys.iter().map(|k| k.name.as_str()))
                                        .map(|h| format!("; did you mean `{h}`?"))
                                        .unwrap_or_default();
                                format!("unknown key `{}` in [{role}]{hint}", entry.key)
                            }
                        };
                        problems.push(file.problem(entry.line, message));
                        continue;
                    };
                    if let Some(setting) = file.setting(keys, key, entry, &mut problems) {
                        // The table's value wins over a top-level one.
                        values.retain(|s| s.key.name != setting.key.name);
                        values.push(setting);
                    }
                }
            }
            for (i, later) in values.iter().enumerate() {
                if let Some(earlier) = values[..i]
                    .iter()
                    .find(|e| e.key.conflicts_with(&later.key))
                {
                    let (first, second) = if earlier.line <= later.line {
                        (earlier, later)
                    } else {
                        (later, earlier)
                    };
                    problems.push(file.problem(
                        second.line,
                        format!(
                            "`{}` cannot be used with `{}` (line {})",
                            second.key.name, first.key.name, first.line
                        ),
                    ));
                }
            }
            settings.push(Settings {
                role,
                values,
                keys: keys.keys.clone(),
            });
        }
        problems.sort_by(|a, b| (a.line, &a.message).cmp(&(b.line, &b.message)));
        problems.dedup();
        Report { problems, settings }
    }

    /// What `role` reads from `file`, or every problem of it.
    pub fn settings(&self, file: &ConfigFile, role: Role) -> Result<Settings, ConfigError> {
        let mut report = self.check(file, Some(role));
        if !report.problems.is_empty() {
            return Err(ConfigError::Invalid {
                problems: report.problems,
            });
        }
        Ok(report.settings.pop().unwrap_or(Settings {
            role,
            values: Vec::new(),
            keys: self.keys(role).to_vec(),
        }))
    }

    /// A complete configuration file for `role`: every key with its flag's
    /// help, environment variable and default. Keys with a default are set
    /// to it; the others are commented out.
    pub fn example(&self, role: Role) -> String {
        let mut out = format!(
            "# Quarry configuration for `quarry {role} --config FILE`.\n\
             #\n\
             # Keys are the long flags of `quarry {role}`. Precedence: a flag on the\n\
             # command line, then this file, then the QUARRY_* environment variable,\n\
             # then the built-in default. Every value below is the built-in default:\n\
             # remove a key to let its environment variable decide. Keys above the\n\
             # table apply to every role that reads the file; a [coordinator] and a\n\
             # [worker] table can share one file. See docs/configuration.md.\n\
             \n[{role}]\n"
        );
        for key in self.keys(role) {
            out.push('\n');
            let mut help = key.help.trim().to_owned();
            if !help.is_empty() && !help.ends_with(['.', '!', '?']) {
                help.push('.');
            }
            let mut facts = vec![format!("Flag --{}", key.name)];
            if let Some(env) = &key.env {
                let how = if key.multiple {
                    " (comma-separated)"
                } else {
                    ""
                };
                facts.push(format!("environment {env}{how}"));
            }
            if key.multiple {
                facts.push("repeatable: an array here".to_owned());
            }
            if key.defaults.is_empty() {
                facts.push(
                    if key.required {
                        "required"
                    } else {
                        "no default"
                    }
                    .to_owned(),
                );
            } else {
                facts.push(format!("default {}", literal(&key.defaults, key.multiple)));
            }
            for line in wrap(&format!("{help}\n{}.", facts.join("; ")), 76) {
                out.push_str(format!("# {line}").trim_end());
                out.push('\n');
            }
            if key.defaults.is_empty() {
                let placeholder = vec![format!("<{}>", key.value_name)];
                out.push_str(&format!(
                    "# {} = {}\n",
                    key.name,
                    literal(&placeholder, key.multiple)
                ));
            } else {
                out.push_str(&format!(
                    "{} = {}\n",
                    key.name,
                    literal(&key.defaults, key.multiple)
                ));
            }
        }
        out
    }

    /// The settings `role` runs with after `matches` (the whole command
    /// line, with `settings` from its file applied), each with where it
    /// came from: a valid configuration file itself.
    pub fn effective(
        &self,
        role: Role,
        matches: &ArgMatches,
        settings: Option<&Settings>,
    ) -> String {
        let mut out = format!(
            "# The settings of `quarry {role}` and where each comes from: a flag,\n\
             # the file, the environment or the built-in default (in that order).\n\
             [{role}]\n"
        );
        let sub = matches.subcommand_matches(role.name());
        for key in self.keys(role) {
            let found = [sub, Some(matches)].into_iter().flatten().find_map(|m| {
                match m.try_get_raw(&key.id) {
                    Ok(Some(raw)) => Some((m, raw)),
                    _ => None,
                }
            });
            let Some((m, raw)) = found else {
                let required = if key.required { " (required)" } else { "" };
                out.push_str(&format!("# {} is not set{required}\n", key.name));
                continue;
            };
            let values: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
            let source = match m.value_source(&key.id) {
                Some(ValueSource::CommandLine) => "flag".to_owned(),
                Some(ValueSource::EnvVariable) => {
                    format!("environment {}", key.env.as_deref().unwrap_or("?"))
                }
                _ => match settings.and_then(|s| s.values.iter().find(|v| v.key.id == key.id)) {
                    Some(setting) => format!("file {}:{}", setting.path.display(), setting.line),
                    None => "default".to_owned(),
                },
            };
            let line = format!("{} = {}", key.name, literal(&values, key.multiple));
            out.push_str(&format!("{line:<40} # {source}\n"));
        }
        out
    }
}

/// `config check`'s findings.
pub struct Report {
    pub problems: Vec<Problem>,
    pub settings: Vec<Settings>,
}

/// The values one role reads from a file.
#[derive(Clone, Debug)]
pub struct Settings {
    pub role: Role,
    values: Vec<Setting>,
    /// Every key of the role.
    keys: Vec<Key>,
}

#[derive(Clone, Debug)]
struct Setting {
    key: Key,
    values: Vec<String>,
    line: usize,
    path: PathBuf,
}

impl Settings {
    /// How many keys the role reads from the file.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// A key of the file in effect that conflicts with a flag given on the
    /// command line or in the environment (clap sees the file's values as
    /// defaults, which conflict with nothing).
    fn check_conflicts(&self, matches: &ArgMatches) -> Result<(), ConfigError> {
        let explicit = |key: &Key| match matches.try_get_raw(&key.id) {
            Ok(Some(_)) => match matches.value_source(&key.id) {
                Some(ValueSource::CommandLine) => {
                    Some(format!("--{} on the command line", key.name))
                }
                Some(ValueSource::EnvVariable) => {
                    Some(key.env.clone().unwrap_or_else(|| format!("--{}", key.name)))
                }
                _ => None,
            },
            _ => None,
        };
        let mut problems = Vec::new();
        for setting in &self.values {
            let in_effect = matches!(matches.try_get_raw(&setting.key.id), Ok(Some(_)))
                && matches.value_source(&setting.key.id) == Some(ValueSource::DefaultValue);
            if !in_effect {
                continue;
            }
            for other in self.keys.iter().filter(|k| k.conflicts_with(&setting.key)) {
                let Some(given) = explicit(other) else {
                    continue;
                };
                problems.push(Problem {
                    path: setting.path.display().to_string(),
                    line: setting.line,
                    message: format!("`{}` cannot be used with {given}", setting.key.name),
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { problems })
        }
    }

    /// `root` with this file's values as the role's flag defaults, and
    /// without the environment variables of the flags they set: clap then
    /// takes a flag from the command line first, then the file, then (for
    /// a flag the file does not set) the environment, then the built-in
    /// default.
    pub fn apply(&self, root: Command) -> Command {
        let mut root = root;
        if root.find_subcommand(self.role.name()).is_none() {
            return root;
        }
        for setting in &self.values {
            let values = setting.values.clone();
            let set = move |arg: Arg| arg.default_values(values).env(None).required(false);
            root = if setting.key.on_root {
                root.mut_arg(&setting.key.id, set)
            } else {
                root.mut_subcommand(self.role.name(), |sub| sub.mut_arg(&setting.key.id, set))
            };
        }
        root
    }
}

/// A parsed configuration file: its top-level keys and its tables.
#[derive(Clone, Debug)]
pub struct ConfigFile {
    path: PathBuf,
    top: Vec<Entry>,
    tables: Vec<Table>,
}

#[derive(Clone, Debug)]
struct Table {
    name: String,
    line: usize,
    entries: Vec<Entry>,
}

/// `key = value`, at the key's line.
#[derive(Clone, Debug)]
struct Entry {
    key: String,
    line: usize,
    value: Value,
}

#[derive(Clone, Debug)]
enum Value {
    /// A string, number, boolean or date, as text, at its line.
    One(String, usize),
    /// An array of those.
    Many(Vec<(String, usize)>),
    /// What no flag takes (a table, an array of arrays), described.
    Unusable(&'static str, usize),
}

impl ConfigFile {
    /// Reads and parses `path` (TOML syntax only; [`Schema::check`] checks
    /// keys and values).
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
        let lines = LineIndex::new(text);
        let mut file = ConfigFile {
            path: path.to_owned(),
            top: Vec::new(),
            tables: Vec::new(),
        };
        let document = DeTable::parse(text).map_err(|e| {
            let line = e.span().map_or(1, |span| lines.line(span.start));
            let message = e.message().trim().replace('\n', "; ");
            ConfigError::Invalid {
                problems: vec![file.problem(line, format!("invalid TOML: {message}"))],
            }
        })?;
        for (key, value) in document.get_ref().iter() {
            let line = lines.line(key.span().start);
            match value.get_ref() {
                DeValue::Table(table) => file.tables.push(Table {
                    name: key.get_ref().to_string(),
                    line,
                    entries: table
                        .iter()
                        .map(|(k, v)| Entry {
                            key: k.get_ref().to_string(),
                            line: lines.line(k.span().start),
                            value: Value::of(v, &lines),
                        })
                        .collect(),
                }),
                _ => file.top.push(Entry {
                    key: key.get_ref().to_string(),
                    line,
                    value: Value::of(value, &lines),
                }),
            }
        }
        Ok(file)
    }

    fn problem(&self, line: usize, message: String) -> Problem {
        Problem {
            path: self.path.display().to_string(),
            line,
            message,
        }
    }

    /// `entry` as a setting of `key`, or its problems pushed to `problems`.
    fn setting(
        &self,
        keys: &RoleKeys,
        key: &Key,
        entry: &Entry,
        problems: &mut Vec<Problem>,
    ) -> Option<Setting> {
        let items = match &entry.value {
            Value::One(text, line) => vec![(text.clone(), *line)],
            Value::Many(items) if key.multiple => items.clone(),
            Value::Many(_) => {
                problems.push(self.problem(
                    entry.line,
                    format!("`{}`: expected one value, not an array", key.name),
                ));
                return None;
            }
            Value::Unusable(what, line) => {
                problems.push(self.problem(
                    *line,
                    format!("`{}`: expected a value, not {what}", key.name),
                ));
                return None;
            }
        };
        let before = problems.len();
        for (text, line) in &items {
            if let Err(why) = keys.check_value(key, text) {
                problems.push(self.problem(*line, format!("`{}`: {why}", key.name)));
            }
        }
        (problems.len() == before).then(|| Setting {
            key: key.clone(),
            values: items.into_iter().map(|(text, _)| text).collect(),
            line: entry.line,
            path: self.path.clone(),
        })
    }
}

impl Value {
    fn of(value: &toml::Spanned<DeValue<'_>>, lines: &LineIndex) -> Value {
        let line = lines.line(value.span().start);
        match value.get_ref() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    match scalar(item.get_ref()) {
                        Some(text) => out.push((text, lines.line(item.span().start))),
                        None => {
                            return Value::Unusable(
                                "an array of arrays or tables",
                                lines.line(item.span().start),
                            );
                        }
                    }
                }
                Value::Many(out)
            }
            DeValue::Table(_) => Value::Unusable("a table", line),
            other => match scalar(other) {
                Some(text) => Value::One(text, line),
                None => Value::Unusable("this", line),
            },
        }
    }
}

/// A scalar as the text a flag would be given.
fn scalar(value: &DeValue<'_>) -> Option<String> {
    match value {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => Some(
            i128::from_str_radix(i.as_str(), i.radix())
                .map_or_else(|_| i.as_str().to_owned(), |n| n.to_string()),
        ),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        DeValue::Boolean(b) => Some(b.to_string()),
        DeValue::Datetime(d) => Some(d.to_string()),
        DeValue::Array(_) | DeValue::Table(_) => None,
    }
}

/// Byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|start| *start <= offset).max(1)
    }
}

/// `values` as a TOML value: integers and booleans bare, other text
/// quoted; an array when `multiple`.
fn literal(values: &[String], multiple: bool) -> String {
    let one = |text: &String| {
        let bare = text == "true"
            || text == "false"
            || text.parse::<i64>().is_ok_and(|n| n.to_string() == *text);
        if bare {
            text.clone()
        } else {
            toml::Value::String(text.clone()).to_string()
        }
    };
    if multiple {
        format!(
            "[{}]",
            values.iter().map(one).collect::<Vec<_>>().join(", ")
        )
    } else {
        values.first().map(one).unwrap_or_default()
    }
}

/// The candidate nearest to `name` in edit distance, if near enough to be
/// a typo of it (one edit per three characters).
fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= (name.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

/// `text` in lines of at most `width` characters; its own line breaks
/// and blank lines kept.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for paragraph in text.split('\n') {
        if paragraph.trim().is_empty() {
            out.push(String::new());
            continue;
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
                out.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            out.push(line);
        }
    }
    out
}

/// A parsed command line, with `--config`'s file applied.
pub struct Parsed<T> {
    pub cli: T,
    /// `--print-config`'s text: print it and exit instead of running.
    pub print_config: Option<String>,
}

/// Parses `args` (the whole command line, program name first) into `T`.
/// For a server role with `--config FILE` (or `QUARRY_CONFIG`), the
/// file's settings apply below the command line's flags and above the
/// environment. Command-line errors exit as clap does; the file's are
/// returned.
pub fn parse<T: CommandFactory + FromArgMatches>(
    args: Vec<OsString>,
) -> Result<Parsed<T>, ConfigError> {
    let root = T::command();
    let schema = Schema::new(&root);
    let first = first_look(&root, &args);
    let settings = match &first {
        Some(FirstLook {
            role,
            config: Some(path),
            ..
        }) => Some(schema.settings(&ConfigFile::load(path)?, *role)?),
        _ => None,
    };
    // `--print-config` shows a required setting as missing, not an error.
    let command = match &first {
        Some(look) if look.print => relax(root),
        _ => root,
    };
    let command = match &settings {
        Some(settings) => settings.apply(command),
        None => command,
    };
    let matches = command.get_matches_from(args);
    if let (Some(settings), Some((_, sub))) = (&settings, run_mode(&matches)) {
        settings.check_conflicts(sub)?;
    }
    let cli = T::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut T::command()).exit());
    let print_config = run_mode(&matches).and_then(|(role, sub)| {
        matches!(sub.try_get_one::<bool>(PRINT_CONFIG_ID), Ok(Some(true)))
            .then(|| schema.effective(role, &matches, settings.as_ref()))
    });
    Ok(Parsed { cli, print_config })
}

/// The server role `matches` runs, with its matches (`worker ingest` runs
/// none).
fn run_mode(matches: &ArgMatches) -> Option<(Role, &ArgMatches)> {
    let (name, sub) = matches.subcommand()?;
    let role = Role::from_name(name)?;
    sub.subcommand().is_none().then_some((role, sub))
}

/// What a command line that runs a server asks of its configuration.
#[derive(Debug, PartialEq, Eq)]
struct FirstLook {
    role: Role,
    /// `--config`'s file.
    config: Option<PathBuf>,
    /// `--print-config`.
    print: bool,
}

/// The role, `--config` file and `--print-config` of a command line that
/// runs a server. Read before the file is, so nothing is required yet
/// (the file may give `id`); a command line clap refuses gives none, and
/// the real parse reports it.
fn first_look(root: &Command, args: &[OsString]) -> Option<FirstLook> {
    let matches = relax(root.clone()).try_get_matches_from(args).ok()?;
    let (role, sub) = run_mode(&matches)?;
    let config = match sub.try_get_raw(CONFIG_ID) {
        Ok(Some(mut raw)) => raw.next().map(PathBuf::from),
        _ => None,
    };
    let print = matches!(sub.try_get_one::<bool>(PRINT_CONFIG_ID), Ok(Some(true)));
    Some(FirstLook {
        role,
        config,
        print,
    })
}

/// `root` with no flag of a server role required.
fn relax(root: Command) -> Command {
    let mut root = root;
    for role in Role::ALL {
        if root.find_subcommand(role.name()).is_some() {
            root = root.mut_subcommand(role.name(), |sub| sub.mut_args(|a| a.required(false)));
        }
    }
    root
}

/// `quarry config`: check a file, print an example.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file: every key one of the role's flags,
    /// every value one its flag takes. Prints each problem as
    /// FILE:LINE: message and exits non-zero; prints the keys each role
    /// reads when there is none.
    #[command(
        after_help = "Examples:\n  quarry config check /etc/quarry/quarry.toml\n  quarry config check coordinator.toml --role coordinator"
    )]
    Check {
        /// The TOML file.
        file: PathBuf,
        /// Check what this role reads (the top-level keys and its table);
        /// by default every role the file configures: those with a table
        /// or, in a file without one, those that have its keys.
        #[arg(long, value_enum)]
        role: Option<Role>,
    },
    /// Print a complete configuration file for a role: every key with its
    /// flag's help, environment variable and default.
    #[command(
        after_help = "Example:\n  quarry config example coordinator > /etc/quarry/coordinator.toml"
    )]
    Example {
        /// coordinator or worker.
        #[arg(value_enum)]
        role: Role,
    },
}

/// Runs `command` against the server roles of `root`, the binary's clap
/// command.
pub fn run(command: ConfigCommand, root: &Command) -> Result<ExitCode, ConfigError> {
    let schema = Schema::new(root);
    match command {
        ConfigCommand::Check { file, role } => {
            let report = match ConfigFile::load(&file) {
                Ok(config) => schema.check(&config, role),
                Err(ConfigError::Invalid { problems }) => Report {
                    problems,
                    settings: Vec::new(),
                },
                Err(e) => return Err(e),
            };
            if report.problems.is_empty() {
                let counts: Vec<String> = report
                    .settings
                    .iter()
                    .map(|s| {
                        let n = s.len();
                        format!("{}: {n} key{}", s.role, if n == 1 { "" } else { "s" })
                    })
                    .collect();
                println!("{}: ok ({})", file.display(), counts.join(", "));
                Ok(ExitCode::SUCCESS)
            } else {
                for problem in &report.problems {
                    eprintln!("{problem}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        ConfigCommand::Example { role } => {
            print!("{}", schema.example(role));
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Parser};
    use std::time::Duration;

    /// The shapes of the real server commands' flags.
    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(subcommand)]
        command: TestCommand,
        /// Log filter.
        #[arg(long, global = true, default_value = "warn")]
        log: String,
    }

    #[derive(clap::Subcommand, Debug)]
    enum TestCommand {
        Coordinator {
            /// Raft id.
            #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
            node_id: u64,
            /// A peer (repeatable).
            #[arg(long = "peer", value_delimiter = ',')]
            peers: Vec<String>,
            /// Join through this URL.
            #[arg(long, conflicts_with = "peers")]
            join: Option<String>,
            /// Keep this long.
            #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
            retain_for: Duration,
            /// Serve here.
            #[arg(long, default_value = "127.0.0.1:7700")]
            listen: std::net::SocketAddr,
            /// Be verbose.
            #[arg(long)]
            verbose: bool,
            #[command(flatten)]
            config: ConfigArgs,
        },
        Worker(TestWorker),
    }

    #[derive(Args, Debug)]
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    struct TestWorker {
        #[command(subcommand)]
        action: Option<TestAction>,
        /// Worker id.
        #[arg(long, required = true)]
        id: Option<String>,
        /// Tasks at once.
        #[arg(long, default_value_t = 4)]
        slots: u32,
        /// Serve here.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        #[command(flatten)]
        config: ConfigArgs,
    }

    #[derive(clap::Subcommand, Debug)]
    enum TestAction {
        Ingest {
            #[arg(long)]
            shard: String,
        },
    }

    fn schema() -> Schema {
        Schema::new(&TestCli::command())
    }

    fn file(text: &str) -> ConfigFile {
        match ConfigFile::parse(Path::new("quarry.toml"), text) {
            Ok(file) => file,
            Err(e) => panic!("{e}"),
        }
    }

    fn problems(text: &str, role: Option<Role>) -> Vec<String> {
        schema()
            .check(&file(text), role)
            .problems
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn parse_with(text: &str, role: Role, args: &[&str]) -> TestCli {
        let settings = match schema().settings(&file(text), role) {
            Ok(settings) => settings,
            Err(e) => panic!("{e}"),
        };
        let matches = match settings
            .apply(TestCli::command())
            .try_get_matches_from(args)
        {
            Ok(matches) => matches,
            Err(e) => panic!("{e}"),
        };
        match TestCli::from_arg_matches(&matches) {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn keys_come_from_the_command() {
        let schema = schema();
        let names = |role| {
            schema
                .keys(role)
                .iter()
                .map(|k| k.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(Role::Coordinator),
            [
                "log",
                "node-id",
                "peer",
                "join",
                "retain-for",
                "listen",
                "verbose"
            ]
        );
        assert_eq!(names(Role::Worker), ["log", "id", "slots", "listen"]);
        let peer = &schema.keys(Role::Coordinator)[2];
        assert!(peer.multiple && !peer.switch);
        assert!(schema.keys(Role::Coordinator)[6].switch);
        assert!(schema.keys(Role::Worker)[1].required);
    }

    #[test]
    fn the_file_is_below_the_command_line_and_over_the_defaults() {
        let text = "log = \"info\"\n[coordinator]\nnode-id = 3\npeer = [\"a\", \"b\"]\nretain-for = \"2d\"\nverbose = true\n";
        let cli = parse_with(text, Role::Coordinator, &["q", "coordinator"]);
        assert_eq!(cli.log, "info");
        let TestCommand::Coordinator {
            node_id,
            peers,
            retain_for,
            listen,
            verbose,
            config,
            join,
        } = cli.command
        else {
            panic!("not the coordinator")
        };
        assert_eq!(node_id, 3);
        assert_eq!(peers, ["a", "b"]);
        assert_eq!(retain_for, Duration::from_secs(2 * 86_400));
        assert_eq!(
            listen.port(),
            7700,
            "a key the file leaves out keeps its default"
        );
        assert!(verbose);
        assert!(config.config.is_none() && join.is_none());

        let cli = parse_with(
            text,
            Role::Coordinator,
            &[
                "q",
                "--log",
                "debug",
                "coordinator",
                "--peer",
                "c",
                "--node-id",
                "5",
            ],
        );
        assert_eq!(cli.log, "debug");
        let TestCommand::Coordinator { node_id, peers, .. } = cli.command else {
            panic!("not the coordinator")
        };
        assert_eq!((node_id, peers), (5, vec!["c".to_owned()]));
    }

    #[test]
    fn a_required_flag_can_come_from_the_file() {
        let cli = parse_with("[worker]\nid = \"w1\"\n", Role::Worker, &["q", "worker"]);
        let TestCommand::Worker(worker) = cli.command else {
            panic!("not the worker")
        };
        assert_eq!(worker.id.as_deref(), Some("w1"));
        assert!(
            TestCli::command()
                .try_get_matches_from(["q", "worker"])
                .is_err()
        );
    }

    #[test]
    fn the_role_table_wins_over_top_level_keys() {
        let text = "listen = \"127.0.0.1:1\"\n[worker]\nlisten = \"127.0.0.1:2\"\nid = \"w\"\n";
        let TestCommand::Worker(worker) = parse_with(text, Role::Worker, &["q", "worker"]).command
        else {
            panic!("not the worker")
        };
        assert_eq!(worker.listen.port(), 2);
        let TestCommand::Coordinator { listen, .. } =
            parse_with(text, Role::Coordinator, &["q", "coordinator"]).command
        else {
            panic!("not the coordinator")
        };
        assert_eq!(listen.port(), 1);
    }

    #[test]
    fn unknown_keys_are_named_with_their_line_and_the_nearest_key() {
        let text = "# a comment\nlog = \"info\"\n\n[worker]\nid = \"w\"\n\nslot = 4\nnode-id = 2\n\n[coordinatr]\nx = 1\n";
        assert_eq!(
            problems(text, None),
            [
                "quarry.toml:7: unknown key `slot` in [worker]; did you mean `slots`?",
                "quarry.toml:8: unknown key `node-id` in [worker]: it is a [coordinator] setting",
                "quarry.toml:10: unknown table [coordinatr]; did you mean [coordinator]?",
            ]
        );
        assert_eq!(
            problems("lsten = \"x\"\nfoo = 1\n", None),
            [
                "quarry.toml:1: unknown key `lsten`; did you mean `listen`?",
                "quarry.toml:2: unknown key `foo`",
            ]
        );
    }

    #[test]
    fn bad_values_are_named_with_their_line_and_the_parsers_reason() {
        let text = "[coordinator]\nnode-id = 0\nlisten = \"x\"\nretain-for = \"30\"\npeer = \"a\"\nverbose = \"yes\"\n\n[worker]\nslots = [1, 2]\nlisten = { a = 1 }\n";
        let found = problems(text, None);
        let expected = [
            "quarry.toml:2: `node-id`: invalid value \"0\": 0 is not in 1..18446744073709551615",
            "quarry.toml:3: `listen`: invalid value \"x\": invalid socket address syntax",
            "quarry.toml:4: `retain-for`: invalid value \"30\": time unit needed, for example 30sec or 30ms",
            "quarry.toml:6: `verbose`: invalid value \"yes\": expected true or false",
            "quarry.toml:9: `slots`: expected one value, not an array",
            "quarry.toml:10: `listen`: expected a value, not a table",
        ];
        assert_eq!(found, expected);
    }

    #[test]
    fn top_level_keys_must_suit_the_role_that_reads_them() {
        let text = "node-id = 2\nlisten = \"127.0.0.1:1\"\n";
        assert!(problems(text, None).is_empty(), "a coordinator file");
        let report = schema().check(&file(text), None);
        assert_eq!(report.settings.len(), 1);
        assert_eq!(report.settings[0].role, Role::Coordinator);
        assert_eq!(
            problems(text, Some(Role::Worker)),
            ["quarry.toml:1: `node-id` is not a worker setting: put it in [coordinator]"]
        );
        assert_eq!(
            problems("worker = 1\n", None),
            ["quarry.toml:1: `worker` must be a table: [worker]"]
        );
    }

    #[test]
    fn toml_syntax_errors_have_a_line() {
        let err = ConfigFile::parse(Path::new("q.toml"), "[worker]\nid = \"w\"\nslots = \n");
        let Err(ConfigError::Invalid { problems }) = err else {
            panic!("parsed")
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 3, "{}", problems[0]);
        let err = ConfigFile::parse(Path::new("q.toml"), "a = 1\na = 2\n");
        let Err(ConfigError::Invalid { problems }) = err else {
            panic!("parsed")
        };
        assert_eq!(problems[0].line, 2, "{}", problems[0]);
    }

    #[test]
    fn examples_check_clean_and_set_every_key_with_a_default() {
        let schema = schema();
        for role in Role::ALL {
            let text = schema.example(role);
            let file = file(&text);
            let report = schema.check(&file, None);
            assert!(report.problems.is_empty(), "{:?}", report.problems);
            assert_eq!(report.settings.len(), 1);
            let with_default = schema
                .keys(role)
                .iter()
                .filter(|k| !k.defaults.is_empty())
                .count();
            assert_eq!(report.settings[0].len(), with_default, "{text}");
        }
        let worker = schema.example(Role::Worker);
        assert!(
            worker.contains("# Worker id.\n# Flag --id; required.\n# id = \"<ID>\"\n"),
            "{worker}"
        );
    }

    #[test]
    fn effective_settings_name_their_source() {
        let text = "[coordinator]\nnode-id = 3\n";
        let settings = match schema().settings(&file(text), Role::Coordinator) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        let matches = match settings.apply(TestCli::command()).try_get_matches_from([
            "q",
            "coordinator",
            "--listen",
            "127.0.0.1:9",
        ]) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let shown = schema().effective(Role::Coordinator, &matches, Some(&settings));
        assert!(shown.contains("node-id = 3"), "{shown}");
        assert!(shown.contains("# file quarry.toml:2"), "{shown}");
        assert!(shown.contains("listen = \"127.0.0.1:9\""), "{shown}");
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("listen") && l.ends_with("# flag")),
            "{shown}"
        );
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("log") && l.ends_with("# default")),
            "{shown}"
        );
        assert!(
            shown.contains("# peer is not set") || shown.contains("peer = []"),
            "{shown}"
        );
        // What it prints is a file that checks clean.
        assert!(schema().check(&file(&shown), None).problems.is_empty());
    }

    #[test]
    fn config_is_found_before_required_flags_and_not_for_ingest() {
        let args = |list: &[&str]| list.iter().map(OsString::from).collect::<Vec<_>>();
        let root = TestCli::command();
        let look = |list: &[&str]| first_look(&root, &args(list));
        assert_eq!(
            look(&["q", "worker", "--config", "w.toml"]),
            Some(FirstLook {
                role: Role::Worker,
                config: Some(PathBuf::from("w.toml")),
                print: false
            })
        );
        assert_eq!(
            look(&["q", "coordinator", "--config=c.toml", "--print-config"]),
            Some(FirstLook {
                role: Role::Coordinator,
                config: Some(PathBuf::from("c.toml")),
                print: true
            })
        );
        assert_eq!(
            look(&["q", "worker", "--id", "w"]).and_then(|l| l.config),
            None
        );
        assert_eq!(look(&["q", "worker", "ingest", "--shard", "s"]), None);
        assert_eq!(look(&["q", "worker", "--bogus"]), None);
        let cli = match TestCli::try_parse_from(["q", "worker", "ingest", "--shard", "s"]) {
            Ok(cli) => cli,
            Err(e) => panic!("{e}"),
        };
        let TestCommand::Worker(worker) = cli.command else {
            panic!("not the worker")
        };
        assert!(worker.config.config.is_none() && !worker.config.print_config);
        assert!(matches!(worker.action, Some(TestAction::Ingest { shard }) if shard == "s"));
        let schema = schema();
        let keys: Vec<&str> = schema
            .keys(Role::Worker)
            .iter()
            .map(|k| k.name.as_str())
            .collect();
        assert!(!keys.contains(&"config") && !keys.contains(&"print-config"));
    }

    #[test]
    fn conflicting_keys_are_refused_in_the_file_and_against_flags() {
        assert_eq!(
            problems("[coordinator]\npeer = [\"a\"]\njoin = \"b\"\n", None),
            ["quarry.toml:3: `join` cannot be used with `peer` (line 2)"]
        );
        let settings =
            match schema().settings(&file("[coordinator]\npeer = [\"a\"]\n"), Role::Coordinator) {
                Ok(s) => s,
                Err(e) => panic!("{e}"),
            };
        let matches = match settings.apply(TestCli::command()).try_get_matches_from([
            "q",
            "coordinator",
            "--join",
            "u",
        ]) {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let sub = matches.subcommand_matches("coordinator");
        let Some(Err(ConfigError::Invalid { problems })) = sub.map(|m| settings.check_conflicts(m))
        else {
            panic!("no conflict found")
        };
        assert_eq!(
            problems[0].to_string(),
            "quarry.toml:2: `peer` cannot be used with --join on the command line"
        );
        // Without the flag, the file's peers stand.
        let matches = match settings
            .apply(TestCli::command())
            .try_get_matches_from(["q", "coordinator"])
        {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        assert!(
            matches
                .subcommand_matches("coordinator")
                .is_some_and(|m| settings.check_conflicts(m).is_ok())
        );
    }

    #[test]
    fn near_names_only() {
        assert_eq!(closest("slot", ["slots", "listen"]), Some("slots"));
        assert_eq!(closest("data_dir", ["data-dir"]), Some("data-dir"));
        assert_eq!(closest("xyz", ["slots", "listen"]), None);
        assert_eq!(closest("foo", ["log"]), None);
        assert_eq!(
            closest("retian-for", ["retain-hunts", "retain-for"]),
            Some("retain-for")
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
