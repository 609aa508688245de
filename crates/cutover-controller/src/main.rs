//! `cutover-controller`: flags and wiring only.

fn main() {
    eprintln!("cutover-controller: the controller arrives with the blue-green core issue");
    std::process::exit(2);
}
