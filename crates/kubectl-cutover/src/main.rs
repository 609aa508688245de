//! `kubectl cutover`: flags and wiring only. Commands arrive with the CLI issue.

fn main() {
    eprintln!("kubectl-cutover: commands arrive with the CLI issue");
    std::process::exit(2);
}
