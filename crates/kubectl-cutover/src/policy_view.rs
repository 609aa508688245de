//! The `get fp NAME` view of a FailoverPolicy, without I/O: phase and active member, the
//! coordination lease (regional mode: this region, the holder, its fencing token, the
//! state), then one line per member (its region, health, database role, endpoints) and the
//! last drill; every line cut to the terminal width.

use cutover_api::FailoverPolicy;

use crate::tree::{cut, paint};

/// Render the view; `colour` for a terminal.
pub fn render(p: &FailoverPolicy, width: usize, colour: bool) -> String {
    let st = p.status.clone().unwrap_or_default();
    let name = p.metadata.name.clone().unwrap_or_default();
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let phase = st.phase.clone().unwrap_or_else(|| "Unknown".into());
    let code = match phase.as_str() {
        "Healthy" => "32",
        "Degraded" => "31",
        _ => "33",
    };
    let mut lines = vec![format!(
        "{}  {}  namespace {ns}",
        paint(&name, "1", colour),
        paint(&phase, code, colour)
    )];
    lines.push(format!(
        "├─ traffic on {}",
        st.active_member.as_deref().unwrap_or("-")
    ));
    if let Some(c) = &st.coordination {
        let token = c.token.map_or_else(|| "-".to_string(), |t| t.to_string());
        lines.push(format!(
            "├─ lease   {}  holder {}  token {token}  (seen from region {})",
            c.state,
            c.holder.as_deref().unwrap_or("-"),
            c.region
        ));
        if let Some(m) = c.message.as_deref() {
            lines.push(format!("│    {m}"));
        }
    }
    if let Some(dns) = &p.spec.entry.dns {
        lines.push(format!(
            "├─ entry   dns {} (ttl {}s)",
            dns.hostname, dns.ttl
        ));
    } else if let Some(r) = &p.spec.entry.http_route {
        lines.push(format!("├─ entry   HTTPRoute {}", r.name));
    }
    let active = st.active_member.as_deref();
    for (i, m) in p.spec.members.iter().enumerate() {
        let ms = st.members.iter().find(|s| s.name == m.name);
        let health = match ms {
            None => paint("unknown", "33", colour),
            Some(s) if s.down => paint("down", "31", colour),
            Some(s) if s.healthy => paint("healthy", "32", colour),
            Some(_) => paint("failing", "33", colour),
        };
        let branch = if i + 1 == p.spec.members.len() && st.last_drill.is_none() {
            "└─"
        } else {
            "├─"
        };
        let marker = if active == Some(m.name.as_str()) {
            "*"
        } else {
            " "
        };
        let region = m
            .region
            .as_deref()
            .map(|r| format!("region {r}  "))
            .unwrap_or_default();
        let db = ms
            .and_then(|s| s.database_role.as_deref())
            .map(|r| format!("  db {r}"))
            .unwrap_or_default();
        lines.push(format!(
            "{branch}{marker}{:<8} {region}{health}{db}  endpoints {}",
            m.name,
            ms.map_or(0, |s| s.endpoints)
        ));
        if let Some(reason) = ms.and_then(|s| s.reason.as_deref()) {
            lines.push(format!("│    {reason}"));
        }
    }
    if let Some(d) = &st.last_drill {
        lines.push(format!(
            "└─ last drill {}  {} → {}  RTO {}",
            d.verdict.as_deref().unwrap_or("running"),
            d.from,
            d.to,
            d.rto_seconds
                .map_or_else(|| "-".to_string(), |s| format!("{s:.2}s"))
        ));
    }
    lines.into_iter().map(|l| cut(&l, width) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_api::failover::{CoordinationStatus, FailoverPolicyStatus, MemberStatus};

    fn regional() -> FailoverPolicy {
        let mut p: FailoverPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "cutover.dev/v1alpha1", "kind": "FailoverPolicy",
            "metadata": { "name": "shop", "namespace": "apps" },
            "spec": {
                "members": [
                    { "name": "east", "region": "east", "blueGreenDeployment": "shop",
                      "entryAddresses": ["10.0.1.1"] },
                    { "name": "west", "region": "west", "blueGreenDeployment": "shop",
                      "entryAddresses": ["10.0.2.1"] }
                ],
                "entry": { "dns": { "zone": "shop.test", "hostname": "www.shop.test" } },
                "coordination": { "etcd": { "endpoints": ["http://10.0.1.2:2379"] } }
            }
        }))
        .expect("a policy");
        p.status = Some(FailoverPolicyStatus {
            phase: Some("FailedOver".into()),
            active_member: Some("west".into()),
            coordination: Some(CoordinationStatus {
                region: "east".into(),
                state: "Standby".into(),
                holder: Some("west".into()),
                token: Some(4711),
                message: Some("region west holds the lease".into()),
                since: None,
            }),
            members: vec![
                MemberStatus {
                    name: "east".into(),
                    healthy: true,
                    database_role: Some("fenced".into()),
                    endpoints: 2,
                    ..MemberStatus::default()
                },
                MemberStatus {
                    name: "west".into(),
                    healthy: true,
                    database_role: Some("primary".into()),
                    ..MemberStatus::default()
                },
            ],
            ..FailoverPolicyStatus::default()
        });
        p
    }

    #[test]
    fn shows_the_holder_the_token_the_state_and_each_region() {
        let out = render(&regional(), 80, false);
        assert!(
            out.contains("lease   Standby  holder west  token 4711"),
            "{out}"
        );
        assert!(out.contains("(seen from region east)"), "{out}");
        assert!(
            out.contains("east     region east  healthy  db fenced  endpoints 2"),
            "{out}"
        );
        assert!(
            out.contains("*west     region west  healthy  db primary"),
            "{out}"
        );
        assert!(out.contains("entry   dns www.shop.test (ttl 1s)"), "{out}");
        assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    }

    #[test]
    fn lines_are_cut_to_the_width() {
        let out = render(&regional(), 30, false);
        assert!(out.lines().all(|l| l.chars().count() <= 30), "{out}");
    }
}
