//! The etcd-backed coordination lease against a real three-member etcd cluster (one member
//! per region: east, west and a witness): one holder at a time, a holder cut off from the
//! quorum stops acting before anyone else can start, a stale holder's writes are refused by
//! etcd, and losing the witness, the quorum or a link for a moment moves nothing.

use std::time::Duration;

use cutover_api::failover::DnsEntry;
use cutover_controller::coordination::{Coordinator, Error, Holding, Settings, Tenure};
use cutover_controller::traffic::dns;
use cutover_test_support::dns::{CoreDns, StubResolver, a_records, resolver};
use cutover_test_support::etcd::EtcdCluster;
use tokio::time::Instant;

const KEY: &str = "/cutover/failover/apps/web";
const TTL: Duration = Duration::from_secs(3);
const EAST: usize = 0;
const WEST: usize = 1;
const WITNESS: usize = 2;

/// The three regions' etcd, and the east and west candidates.
async fn regions(test: &str) -> (EtcdCluster, Coordinator, Coordinator) {
    let etcd = EtcdCluster::start(test, &["east", "west", "witness"]).await;
    let east = candidate(&etcd, EAST, "east").await;
    let west = candidate(&etcd, WEST, "west").await;
    (etcd, east, west)
}

/// A region's candidate, talking to its own region's member only (as in a partition, it
/// reaches nothing else).
async fn candidate(etcd: &EtcdCluster, member: usize, region: &str) -> Coordinator {
    let settings = Settings::new(vec![etcd.endpoint(member)], KEY, region, TTL);
    Coordinator::connect(settings)
        .await
        .expect("valid settings")
}

/// Campaigns until this candidate holds the key; returns its tenure and when it got it.
async fn take(c: &Coordinator, within: Duration) -> (Tenure, Instant) {
    let deadline = Instant::now() + within;
    loop {
        // Held by another, or etcd unreachable: try again.
        if let Ok(Ok(tenure)) = c.campaign().await {
            return (tenure, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "{} did not get the lease within {within:?}",
            c.settings().holder
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `tenure` is lost within `window` (the only way to show that it is not).
async fn lost_within(tenure: &mut Tenure, window: Duration) -> bool {
    tokio::time::timeout(window, tenure.lost()).await.is_ok()
}

#[tokio::test]
async fn one_region_holds_the_lease_and_a_cut_off_holder_fences_before_another_takes_over() {
    let (etcd, east, west) = regions("partition").await;

    // Both campaign at once; exactly one wins and the other is told who holds it.
    let (a, b) = tokio::join!(east.campaign(), west.campaign());
    let (a, b) = (a.expect("east reaches etcd"), b.expect("west reaches etcd"));
    let (mut holder, other, loser) = match (a, b) {
        (Ok(t), Err(h)) => (t, h, &west),
        (Err(h), Ok(t)) => (t, h, &east),
        (Ok(_), Ok(_)) => panic!("both regions hold the lease"),
        (Err(a), Err(b)) => panic!("nobody holds the lease: {a:?} {b:?}"),
    };
    assert_eq!(
        other.token,
        holder.token(),
        "the loser sees the holder's token"
    );
    assert_ne!(other.holder, loser.settings().holder);
    let holder_member = if std::ptr::eq(loser, &west) {
        EAST
    } else {
        WEST
    };
    // The holder acts with its token.
    holder
        .put_fenced("/cutover/dns/web", "10.0.0.1")
        .await
        .expect("the holder's write is accepted");
    // It keeps the lease across several TTLs.
    assert!(!lost_within(&mut holder, TTL * 2).await, "renewals keep it");
    let old_token = holder.token();

    // The holder's region is cut off.
    etcd.freeze(holder_member);
    let cut = Instant::now();
    assert!(
        lost_within(&mut holder, TTL * 2).await,
        "a holder that cannot renew gives up within its TTL"
    );
    let fenced = Instant::now();
    assert!(!holder.may_act());
    let (new_holder, taken) = take(loser, TTL * 4).await;
    assert!(
        fenced < taken,
        "the old holder fenced itself {:?} after the cut, the new one took over {:?} after it",
        fenced - cut,
        taken - cut
    );
    assert_ne!(
        new_holder.token(),
        old_token,
        "a new tenure has a new token"
    );

    // The partition heals: the old holder's late write carries its old token and is refused
    // by etcd itself, not only by its own check.
    etcd.thaw(holder_member);
    etcd.wait_serving(holder_member, Duration::from_secs(30))
        .await;
    let old = if holder_member == EAST { &east } else { &west };
    let refused = old
        .put_with_token(old_token, "/cutover/dns/web", "10.0.0.1")
        .await;
    assert!(
        matches!(refused, Err(Error::Fenced { token, .. }) if token == old_token),
        "a stale token's write is refused: {refused:?}"
    );
    assert!(matches!(
        holder.put_fenced("/cutover/dns/web", "10.0.0.1").await,
        Err(Error::Fenced { .. })
    ));
    new_holder
        .put_fenced("/cutover/dns/web", "10.0.0.2")
        .await
        .expect("the new holder's write is accepted");
    // Healing moves nothing back: the old region is told who holds it.
    match old.campaign().await.expect("etcd answers") {
        Err(Holding { holder, token }) => {
            assert_eq!(holder, loser.settings().holder);
            assert_eq!(token, new_holder.token());
        }
        Ok(_) => panic!("the healed region took the lease back"),
    }
}

fn entry() -> DnsEntry {
    DnsEntry {
        zone: "shop.test".into(),
        hostname: "www.shop.test".into(),
        ttl: 1,
        path: "/skydns".into(),
    }
}

/// Publishes `addresses` as `member`'s entry records with `tenure`'s token.
async fn publish(tenure: &Tenure, member: &str, addresses: &[&str]) -> Result<i64, Error> {
    let addresses: Vec<String> = addresses.iter().map(|a| (*a).to_string()).collect();
    let (prefix, puts) = dns::records(&entry(), member, &addresses).expect("records");
    tenure.replace_fenced(&prefix, &puts).await
}

/// Resolves until the answer is `want`, within `within`; returns the last answer.
async fn resolves_to(
    r: &StubResolver,
    want: &[&str],
    within: Duration,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + within;
    loop {
        let got = a_records(r, "www.shop.test").await;
        if got.as_deref().is_ok_and(|g| g == want) || Instant::now() >= deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_entry_resolves_through_every_region_s_dns_and_a_cut_off_region_s_dns_stops_answering()
{
    let (etcd, east, west) = regions("dns").await;
    let zone = entry();
    let east_dns = CoreDns::start("dns-east", &zone.zone, &zone.path, &etcd.endpoint(EAST)).await;
    let west_dns = CoreDns::start("dns-west", &zone.zone, &zone.path, &etcd.endpoint(WEST)).await;
    let (mut held, _) = take(&east, Duration::from_secs(5)).await;
    publish(&held, "east", &["10.90.1.10", "10.90.1.11"])
        .await
        .expect("the holder publishes");

    // Each region's DNS server answers with the records, and a client asking both in turn.
    let both = resolver(&[east_dns.addr, west_dns.addr]);
    let only_east = resolver(&[east_dns.addr]);
    let only_west = resolver(&[west_dns.addr]);
    for r in [&both, &only_east, &only_west] {
        let got = resolves_to(r, &["10.90.1.10", "10.90.1.11"], Duration::from_secs(5)).await;
        assert_eq!(
            got.as_deref(),
            Ok(&["10.90.1.10".to_string(), "10.90.1.11".to_string()][..])
        );
    }

    // East is cut off: its DNS server, reading a member without a quorum, stops answering
    // (no stale records), and the holder fences itself before west can take the lease.
    etcd.freeze(EAST);
    assert!(
        lost_within(&mut held, TTL).await,
        "east fences itself within one TTL"
    );
    let (west_held, _) = take(&west, TTL * 3).await;
    publish(&west_held, "west", &["10.90.2.10"])
        .await
        .expect("the new holder publishes");
    let stale = publish(&held, "east", &["10.90.1.10"]).await;
    assert!(matches!(stale, Err(Error::Fenced { .. })), "{stale:?}");
    let cut_off = a_records(&resolver(&[east_dns.addr]), "www.shop.test").await;
    assert!(
        cut_off.is_err(),
        "east's DNS answered without a quorum: {cut_off:?}"
    );
    // A client asking east first gets west's answer from the next server, within the TTL.
    let fresh = resolver(&[east_dns.addr, west_dns.addr]);
    let got = resolves_to(&fresh, &["10.90.2.10"], Duration::from_secs(5)).await;
    assert_eq!(got, Ok(vec!["10.90.2.10".to_string()]));
    let got = resolves_to(&both, &["10.90.2.10"], Duration::from_secs(5)).await;
    assert_eq!(
        got,
        Ok(vec!["10.90.2.10".to_string()]),
        "the client honours the 1 s TTL"
    );

    // Healed: east's DNS serves the new holder's records; the stale holder stays refused.
    etcd.thaw(EAST);
    etcd.wait_serving(EAST, Duration::from_secs(10)).await;
    let got = resolves_to(&only_east, &["10.90.2.10"], Duration::from_secs(5)).await;
    assert_eq!(got, Ok(vec!["10.90.2.10".to_string()]));
    let stale = publish(&held, "east", &["10.90.1.10"]).await;
    assert!(matches!(stale, Err(Error::Fenced { .. })), "{stale:?}");
}

#[tokio::test]
async fn losing_the_witness_moves_nothing() {
    let (mut etcd, east, west) = regions("witness").await;
    let (mut holder, _) = take(&east, TTL).await;

    // Two of three members remain: the holder keeps the lease and acts.
    etcd.kill(WITNESS);
    assert!(
        !lost_within(&mut holder, TTL * 3).await,
        "the holder keeps the lease without the witness"
    );
    assert!(
        matches!(west.campaign().await, Ok(Err(Holding { ref holder, .. })) if holder == "east"),
        "west still sees east as the holder"
    );
    holder
        .put_fenced("/cutover/dns/web", "10.0.0.1")
        .await
        .expect("the holder still acts");
}

#[tokio::test]
async fn a_lost_region_hands_the_lease_over() {
    let (mut etcd, east, west) = regions("region").await;
    let (holder, _) = take(&east, TTL).await;

    // East's member and controller die at once.
    etcd.kill(EAST);
    drop(holder);
    let lost = Instant::now();
    let (tenure, taken) = take(&west, TTL * 4).await;
    assert!(tenure.may_act());
    assert_eq!(
        west.holding().await.expect("west reads").map(|h| h.holder),
        Some("west".to_string())
    );
    tenure
        .put_fenced("/cutover/dns/web", "10.0.0.2")
        .await
        .expect("the new holder acts");
    eprintln!("east lost -> west holds the lease after {:?}", taken - lost);
}

#[tokio::test]
async fn without_a_quorum_the_holder_fences_and_nobody_takes_over() {
    let (etcd, east, west) = regions("quorum").await;
    let (mut holder, _) = take(&east, TTL).await;

    // West and the witness are gone from east's view and from each other: no quorum.
    etcd.freeze(WEST);
    etcd.freeze(WITNESS);
    assert!(
        lost_within(&mut holder, TTL * 2).await,
        "a holder without a quorum gives up"
    );
    // Nobody can hold the lease without a quorum: a campaign fails rather than wins.
    assert!(
        !matches!(east.campaign().await, Ok(Ok(_))),
        "a campaign without a quorum wins nothing"
    );
    // The quorum returns: the key is taken again once the old lease expires.
    etcd.thaw(WEST);
    etcd.thaw(WITNESS);
    let (tenure, _) = take(&west, TTL * 6).await;
    assert!(tenure.may_act());
}

#[tokio::test]
async fn a_flapping_link_moves_nothing() {
    let (etcd, east, west) = regions("flap").await;
    let (mut holder, _) = take(&east, TTL).await;
    let token = holder.token();
    // East's member drops off for 200 ms at a time, ten times: shorter than a renewal
    // period and than etcd's election timeout.
    for _ in 0..10 {
        etcd.freeze(EAST);
        assert!(!lost_within(&mut holder, Duration::from_millis(200)).await);
        etcd.thaw(EAST);
        assert!(!lost_within(&mut holder, Duration::from_millis(700)).await);
    }
    assert!(holder.may_act());
    assert_eq!(holder.token(), token);
    assert!(
        matches!(west.campaign().await, Ok(Err(Holding { ref holder, .. })) if holder == "east"),
        "west never took over"
    );
}

#[test]
fn a_holder_acts_until_the_earliest_expiry_less_the_margin_and_late_answers_never_shorten_it() {
    use cutover_controller::coordination::Standing;
    let t0 = Instant::now();
    let margin = Duration::from_millis(750);
    let s = Standing::after_renewal(t0, TTL, margin);
    assert_eq!(s.act_until, t0 + TTL - margin);
    assert!(s.may_act(t0 + TTL - margin - Duration::from_millis(1)));
    assert!(!s.may_act(t0 + TTL - margin));
    // A renewal sent later moves it on; a late answer to an earlier one does not move it back.
    let later = s.renewed(t0 + Duration::from_secs(1), TTL, margin);
    assert_eq!(later.act_until, t0 + Duration::from_secs(1) + TTL - margin);
    assert_eq!(later.renewed(t0, TTL, margin), later);
}
