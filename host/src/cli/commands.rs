//! The subcommands that inspect or prepare rather than serve: `check`,
//! `keys`, `plugins`.

use std::path::Path;

use crate::{KeysCommand, PluginsCommand, load};

pub(crate) fn plugins_command(
    command: PluginsCommand,
    runtime: &tokio::runtime::Runtime,
) -> Result<(), String> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = match command {
        PluginsCommand::List { config } => {
            let (config, registry, _) = load(&config)?;
            let mut rows = switchyard::ops::rows(&registry);
            let mut text = String::new();
            match runtime.block_on(switchyard::ops::live_detail(&config)) {
                Some(detail) => {
                    switchyard::ops::apply_live(&mut rows, &detail);
                    text.push_str(&format!(
                        "(live states from the gateway at {})\n",
                        config.listen
                    ));
                }
                None => text.push_str(
                    "(no gateway answers at the config's listen address: states as loaded now)\n",
                ),
            }
            text.push_str(&switchyard::ops::table(&rows));
            text
        }
        PluginsCommand::Check { file } => match switchyard::ops::check_file(&file) {
            Ok(report) => report,
            Err(report) => {
                let _ = out.write_all(report.as_bytes());
                return Err(format!("{} would not load", file.display()));
            }
        },
        PluginsCommand::New {
            kind,
            lang,
            name,
            dir,
            templates,
        } => {
            let kind = switchyard::domain::Kind::parse(&kind)
                .ok_or_else(|| format!("--kind {kind:?}: one of adapter, strategy, evaluator"))?;
            let templates = templates.unwrap_or_else(switchyard::ops::default_templates);
            let made = switchyard::ops::new_plugin(&templates, kind, &lang, &name, &dir)?;
            format!(
                "created {} ({lang} {kind}); build it as its README says and copy the .wasm into the gateway's plugins folder\n",
                made.display()
            )
        }
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}

/// `switchyard check`: a report on stderr, a non-zero exit for an invalid config.
pub(crate) fn check(path: &Path) -> Result<(), String> {
    let (config, registry, warnings) = load(path)?;
    let mut report = format!("config {} is valid\n", path.display());
    report.push_str(&format!("plugins in {}:\n", config.plugins.dir.display()));
    for p in registry.loaded() {
        report.push_str(&format!(
            "  {:<16} {:<9} wit {} {} {} ({})\n",
            p.id,
            p.kind.to_string(),
            p.wit,
            p.metadata().name,
            p.metadata().version,
            &p.hash[..12]
        ));
    }
    for (id, reason) in registry.rejected() {
        report.push_str(&format!("  {id:<16} REJECTED: {reason}\n"));
    }
    report.push_str(&switchyard::ops::route_table(&config));
    for w in &warnings {
        report.push_str(&format!("warning: {w}\n"));
    }
    report.push_str(&format!("{} warning(s)\n", warnings.len()));
    eprint!("{report}");
    Ok(())
}

pub(crate) fn keys(command: KeysCommand) -> Result<(), String> {
    use std::io::{Read, Write};
    let mut out = std::io::stdout().lock();
    let text = match command {
        KeysCommand::New { name } => {
            let key = switchyard::auth::new_key()?;
            let hash = switchyard::auth::hash_text(&key);
            let entry = serde_json::json!({ &name: { "hash": hash } });
            format!(
                "key:  {key}\nhash: {hash}\n\nThe key is shown once: give it to the caller. Put the hash in the config:\n\"auth\": {{ \"keys\": {entry} }}\n"
            )
        }
        KeysCommand::Hash => {
            let mut key = String::new();
            std::io::stdin()
                .read_to_string(&mut key)
                .map_err(|e| format!("cannot read the key from standard input: {e}"))?;
            format!("{}\n", switchyard::auth::hash_text(key.trim()))
        }
    };
    out.write_all(text.as_bytes()).map_err(|e| e.to_string())
}
