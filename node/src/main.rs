//! `dvrmesh`: the agent and its command line. Parses arguments and calls `dvrmesh_node`.
#![forbid(unsafe_code)]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
