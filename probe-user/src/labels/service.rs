//! The service a request is counted for: `service_name`, and where its process runs
//! (`container_id`, `k8s_pod_uid`, `k8s_pod_name`, `k8s_namespace_name`: OpenTelemetry's
//! resource attributes as Prometheus renders them). Two services on one node with the same
//! command name and port, in two containers or pods, are two services.
//!
//! Every label here is bounded by what runs on the node: one set per measured container
//! (the registry gives out at most `MAX_SERVICES` ids, and the request series go through
//! the node-wide `--max-label-sets` cap).
use std::{fmt, sync::Arc};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use super::{container, label_safe};

/// Where a process runs, as read from /proc (`ProcRoot::placement`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    pub container_id: Option<String>,
    pub k8s_pod_uid: Option<String>,
    pub k8s_pod_name: Option<String>,
    pub k8s_namespace_name: Option<String>,
}

/// Which placement labels series carry (`--container-labels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlacementLabels {
    pub container_id: bool,
    pub k8s_pod_uid: bool,
    pub k8s_pod_name: bool,
    pub k8s_namespace_name: bool,
    /// `container_id` for a container that is in no pod (docker, podman), where it is the
    /// one thing that tells containers apart.
    pub container_id_outside_pods: bool,
}

impl PlacementLabels {
    pub const ALL: PlacementLabels = PlacementLabels {
        container_id: true,
        k8s_pod_uid: true,
        k8s_pod_name: true,
        k8s_namespace_name: true,
        container_id_outside_pods: true,
    };
    pub const NONE: PlacementLabels = PlacementLabels {
        container_id: false,
        k8s_pod_uid: false,
        k8s_pod_name: false,
        k8s_namespace_name: false,
        container_id_outside_pods: false,
    };
    /// The default: a pod's series say which pod (namespace and name: stable across its
    /// containers' restarts, which change their ids); a container's outside any pod, which
    /// container. The long ids of pods and of their containers stay off the page unless
    /// asked for: each costs 50 to 80 bytes on every line.
    pub const AUTO: PlacementLabels = PlacementLabels {
        container_id: false,
        k8s_pod_uid: false,
        k8s_pod_name: true,
        k8s_namespace_name: true,
        container_id_outside_pods: true,
    };
}

impl Default for PlacementLabels {
    fn default() -> Self {
        PlacementLabels::AUTO
    }
}

#[derive(Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct ServiceLabels {
    service_name: Box<str>,
    container_id: Box<str>,
    k8s_pod_uid: Box<str>,
    k8s_pod_name: Box<str>,
    k8s_namespace_name: Box<str>,
}

/// A service's labels, shared by every series and connection of it (cloning is cheap).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service(Arc<ServiceLabels>);

impl Service {
    /// A service known by its name alone (not in a container, or labels turned off).
    pub fn named(name: &str) -> Self {
        Service(Arc::new(ServiceLabels { service_name: label_safe(name.to_string()).into(), ..Default::default() }))
    }

    /// The service of a process: `--service` if given, else the workload its pod belongs
    /// to, else its command name; with the placement labels chosen (a container outside
    /// pods is one with a container id and no pod uid, name or namespace).
    pub fn of(pinned: Option<&str>, placement: &Placement, comm: &str, chosen: PlacementLabels) -> Self {
        let name = match (pinned, &placement.k8s_pod_name) {
            (Some(name), _) => name,
            (None, Some(pod)) => container::workload_of_pod(pod),
            (None, None) => comm,
        };
        let pick = |on: bool, v: &Option<String>| -> Box<str> {
            if on { label_safe(v.clone().unwrap_or_default()).into() } else { Box::default() }
        };
        let in_pod = placement.k8s_pod_uid.is_some()
            || placement.k8s_pod_name.is_some()
            || placement.k8s_namespace_name.is_some();
        let container_id = chosen.container_id || (chosen.container_id_outside_pods && !in_pod);
        Service(Arc::new(ServiceLabels {
            service_name: label_safe(name.to_string()).into(),
            container_id: pick(container_id, &placement.container_id),
            k8s_pod_uid: pick(chosen.k8s_pod_uid, &placement.k8s_pod_uid),
            k8s_pod_name: pick(chosen.k8s_pod_name, &placement.k8s_pod_name),
            k8s_namespace_name: pick(chosen.k8s_namespace_name, &placement.k8s_namespace_name),
        }))
    }

    /// `service_name`.
    pub fn name(&self) -> &str {
        &self.0.service_name
    }

    pub fn container_id(&self) -> &str {
        &self.0.container_id
    }

    /// The placement labels that are set, as (name, value).
    pub fn placement(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let l = &self.0;
        [
            ("container_id", &*l.container_id),
            ("k8s_pod_uid", &*l.k8s_pod_uid),
            ("k8s_pod_name", &*l.k8s_pod_name),
            ("k8s_namespace_name", &*l.k8s_namespace_name),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }
}

impl From<&str> for Service {
    fn from(name: &str) -> Self {
        Service::named(name)
    }
}

/// The service's name, as logs show it, with its container where it has one.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let l = &self.0;
        if !l.k8s_pod_name.is_empty() {
            write!(f, " (pod {}/{})", l.k8s_namespace_name, l.k8s_pod_name)?;
        } else if !l.container_id.is_empty() {
            write!(f, " (container {})", &l.container_id[..12.min(l.container_id.len())])?;
        }
        Ok(())
    }
}

/// `service_name`, then the placement labels that are set (an empty label would be the same
/// series to Prometheus, and bytes on every line of the page).
impl EncodeLabelSet for Service {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        ("service_name", self.name()).encode(encoder.encode_label())?;
        for (name, value) in self.placement() {
            (name, value).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Placement {
        Placement {
            container_id: Some("ab".repeat(32)),
            k8s_pod_uid: Some("0f3a8c1e-5b7d-4e2a-9c6f-1d2e3f4a5b6c".into()),
            k8s_pod_name: Some("shop-7d9f8b6c5d-x2x7k".into()),
            k8s_namespace_name: Some("prod".into()),
        }
    }

    #[test]
    fn the_name_comes_from_the_flag_then_the_pod_then_the_command() {
        let all = PlacementLabels::ALL;
        assert_eq!(Service::of(Some("cart"), &pod(), "gunicorn", all).name(), "cart");
        assert_eq!(Service::of(None, &pod(), "gunicorn", all).name(), "shop");
        let container = Placement { container_id: Some("ab".repeat(32)), ..Default::default() };
        assert_eq!(Service::of(None, &container, "gunicorn", all).name(), "gunicorn");
        assert_eq!(Service::of(None, &Placement::default(), "gunicorn", all), Service::named("gunicorn"));
    }

    #[test]
    fn by_default_a_pod_is_named_and_a_container_outside_pods_has_its_id() {
        let auto = PlacementLabels::default();
        let in_pod: Vec<_> = Service::of(None, &pod(), "gunicorn", auto).placement().map(|(k, _)| k).collect();
        assert_eq!(in_pod, ["k8s_pod_name", "k8s_namespace_name"]);
        let docker = Placement { container_id: Some("ab".repeat(32)), ..Default::default() };
        let alone: Vec<_> = Service::of(None, &docker, "gunicorn", auto).placement().map(|(k, _)| k).collect();
        assert_eq!(alone, ["container_id"]);
    }

    #[test]
    fn two_containers_are_two_services_unless_their_labels_are_off() {
        let a = Placement { container_id: Some("a".repeat(64)), ..Default::default() };
        let b = Placement { container_id: Some("b".repeat(64)), ..Default::default() };
        let all = PlacementLabels::ALL;
        assert_ne!(Service::of(None, &a, "gunicorn", all), Service::of(None, &b, "gunicorn", all));
        let none = PlacementLabels::NONE;
        assert_eq!(Service::of(None, &a, "gunicorn", none), Service::of(None, &b, "gunicorn", none));
        let only_pod =
            PlacementLabels { container_id: false, container_id_outside_pods: false, ..PlacementLabels::ALL };
        let s = Service::of(None, &pod(), "gunicorn", only_pod);
        let labels: Vec<_> = s.placement().map(|(k, _)| k).collect();
        assert_eq!(labels, ["k8s_pod_uid", "k8s_pod_name", "k8s_namespace_name"]);
    }

    #[test]
    fn encoded_labels_leave_out_the_empty_ones() {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
        struct L {
            method: String,
            #[prometheus(flatten)]
            service: Service,
        }
        let mut registry = prometheus_client::registry::Registry::default();
        let family =
            prometheus_client::metrics::family::Family::<L, prometheus_client::metrics::counter::Counter>::default();
        registry.register("x", "x", family.clone());
        family.get_or_create(&L { method: "GET".into(), service: Service::named("host") }).inc();
        family
            .get_or_create(&L { method: "GET".into(), service: Service::of(None, &pod(), "g", PlacementLabels::ALL) })
            .inc();
        let mut page = String::new();
        prometheus_client::encoding::text::encode(&mut page, &registry).unwrap();
        assert!(page.contains("x_total{method=\"GET\",service_name=\"host\"} 1"), "{page}");
        let id = "ab".repeat(32);
        assert!(
            page.contains(&format!(
                "x_total{{method=\"GET\",service_name=\"shop\",container_id=\"{id}\",\
                 k8s_pod_uid=\"0f3a8c1e-5b7d-4e2a-9c6f-1d2e3f4a5b6c\",k8s_pod_name=\"shop-7d9f8b6c5d-x2x7k\",\
                 k8s_namespace_name=\"prod\"}} 1"
            )),
            "{page}"
        );
    }
}
