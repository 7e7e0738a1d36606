//! Packaging, generated from the clap definition: shell completions
//! (`--completions SHELL`) and the man page (`--man`) with EXAMPLES, EXIT
//! STATUS and SEE ALSO sections of its own, and the roff escaping those
//! need.
//!
//! Part of the `cli` module. Not here: the definition itself (`flags`),
//! and printing: [`main`](super::main) writes these to standard output.

use clap_complete::Shell;

use super::flags::{command, examples};
use super::{Role, EXIT_BAD_CONFIG, EXIT_START_FAILED, EXIT_USAGE};

/// The exit codes, for the man page.
const EXIT_STATUS: &[(u8, &str)] = &[
    (0, "success; -test: the configuration is usable"),
    (EXIT_USAGE, "wrong flags or a wrong combination of them"),
    (
        EXIT_BAD_CONFIG,
        "the configuration cannot be used (V2Ray's code); the reason names the file and field",
    ),
    (
        EXIT_START_FAILED,
        "the configuration could not start, e.g. a port in use",
    ),
];

/// Shell completions for `role`, generated from [`command`].
pub fn completions(role: Role, shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(role), role.name(), &mut out);
    out
}

/// The man page of `role` (roff), generated from [`command`], with
/// EXAMPLES and EXIT STATUS sections of its own.
pub fn man_page(role: Role) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(command(role));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    out.extend_from_slice(b".SH EXAMPLES\n.nf\n");
    for line in examples(role) {
        out.extend_from_slice(roff_escape(line).as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b".fi\n.SH \"EXIT STATUS\"\n");
    for (code, meaning) in EXIT_STATUS {
        out.extend_from_slice(format!(".TP\n{code}\n{}\n", roff_escape(meaning)).as_bytes());
    }
    out.extend_from_slice(b".SH \"SEE ALSO\"\n");
    let other = match role {
        Role::Bridge => "portal",
        Role::Portal => "bridge",
    };
    out.extend_from_slice(format!("\\fB{other}\\fR(1), \\fBv2ray\\fR(1)\n").as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Text as one roff line: backslashes and dashes escaped, a leading
/// control character neutralized.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_completions_and_man_come_from_the_definition() {
        let help = command(Role::Portal).render_long_help().to_string();
        assert!(
            help.contains("--tunnel") && help.contains("--public"),
            "{help}"
        );
        assert!(!help.contains("--to "), "{help}");
        let help = command(Role::Bridge).render_long_help().to_string();
        assert!(
            help.contains("--portal") && help.contains("--security"),
            "{help}"
        );
        assert!(!help.contains("--tunnel"), "{help}");
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let text = String::from_utf8(completions(Role::Bridge, shell)).unwrap();
            assert!(text.contains("bridge"), "{shell}: {text}");
            assert!(
                text.contains("portal") && text.contains("config"),
                "{shell}: {text}"
            );
            // The portal's flags are not the bridge's, not even hidden.
            assert!(!text.contains("--tunnel"), "{shell}: {text}");
        }
        let page = String::from_utf8(man_page(Role::Portal).unwrap()).unwrap();
        assert!(
            page.starts_with(".ie") || page.contains(".TH portal"),
            "{page}"
        );
        assert!(
            page.contains("tunnel") && page.contains(".SH \"EXIT STATUS\""),
            "{page}"
        );
        assert!(page.contains("portal \\-\\-tunnel 0.0.0.0:1024"), "{page}");
        assert_eq!(roff_escape(".x\\y-z"), "\\&.x\\ey\\-z");
    }
}
