//! `patchgate-agent`: see [`patchgate_agent::cli`].

fn main() -> std::process::ExitCode {
    patchgate_agent::cli::main()
}
