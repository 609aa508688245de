//! The regions' network ([`cutover_test_support::netns`]) against the real kernel: a
//! region reaches another over the bridge, a cut drops exactly the frames between the two
//! (the host still reaches both), a link taken down cuts a region off from everything,
//! and processes spawned in a region see its address. Needs root (network namespaces).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use cutover_test_support::netns::{self, Fabric, Region};

const A: usize = 0;
const B: usize = 1;

/// Whether a TCP connection to `to` is set up within half a second, from `from` (the
/// host when `None`).
fn connects(from: Option<&Region>, to: SocketAddr) -> bool {
    let connect = || TcpStream::connect_timeout(&to, Duration::from_millis(500)).is_ok();
    netns::within(from, connect)
}

#[test]
fn regions_reach_each_other_until_cut_and_a_link_down_cuts_a_region_off() {
    let fabric = Fabric::create(250, &["a", "b"]);
    let (a, b) = (fabric.region(A), fabric.region(B));
    assert_eq!(a.addr.to_string(), "10.252.250.2");
    let listener: TcpListener = a.enter(|| TcpListener::bind(a.at(0)).expect("bind in a"));
    let on_a = listener.local_addr().expect("the listener's address");
    assert_eq!(on_a.ip(), a.ip());
    assert!(connects(Some(b), on_a), "b does not reach a");
    assert!(connects(None, on_a), "the host does not reach a");

    fabric.cut(A, B);
    assert!(!connects(Some(b), on_a), "b reaches a across the cut");
    assert!(
        connects(None, on_a),
        "the cut between a and b cut the host off"
    );
    fabric.heal();
    assert!(connects(Some(b), on_a), "b does not reach a after the heal");

    fabric.set_link(A, false);
    assert!(
        !connects(None, on_a),
        "the host reaches a with its link down"
    );
    assert!(!connects(Some(b), on_a), "b reaches a with its link down");
    fabric.set_link(A, true);
    assert!(
        connects(None, on_a),
        "the host does not reach a with its link up"
    );

    // A process spawned in b has b's address and no route off the region's subnet.
    let out = b
        .enter(|| {
            Command::new("ip")
                .args(["-4", "-o", "addr"])
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .expect("ip in b")
        .wait_with_output()
        .expect("ip's output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("inet {}/24", b.addr)), "{text}");
    let routes = b.enter(|| {
        Command::new("ip")
            .args(["-4", "route"])
            .output()
            .expect("ip route")
    });
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        !routes.contains("default"),
        "a region has a default route: {routes}"
    );

    let ns = a.netns().to_string();
    drop(fabric);
    assert!(
        !std::path::Path::new("/var/run/netns").join(&ns).exists(),
        "{ns} is left after the fabric was dropped"
    );
    assert!(
        !std::path::Path::new("/sys/class/net/cutdr250").exists(),
        "the host's link is left"
    );
}
