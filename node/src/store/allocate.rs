//! Objects that need an address or a MAC before they are published: ports, floating IPs, router
//! gateways and SNAT ports, and this node's FIP gateway port on an external network.

use mesh_proto::{ObjectId, ObjectKind, Record, TenantObject};
use serde_json::Value;
use tracing::info;

use mesh_proto::BlockSpace;

use super::claims::{Claimed, Got, Want};
use super::ConfigService;
use crate::tenant::blocks;
use crate::tenant::ops::{self, FipPlan, PortPlan, UniquePlan};

impl ConfigService {
    /// Allocates `wants` for `holder`: addresses and MACs not asked for explicitly come from
    /// this node's blocks with no wait (a new block is claimed when they hold none free); the
    /// rest (explicit values, single values outside every block when no block fits any more,
    /// VNIs and names) through claims, which need a majority in view for addresses and
    /// MACs. Returns the values in the order asked and the claim keys to withdraw.
    pub(super) async fn allocate(
        &self,
        holder: &ObjectId,
        wants: &[Want],
    ) -> Result<(Claimed, Vec<String>), String> {
        // Every block value at once: a first port claims its address and MAC blocks in one
        // claim window.
        let mut got: Vec<Option<Got>> =
            futures_util::future::try_join_all(wants.iter().map(|w| self.block_value(w, holder)))
                .await?;
        let to_claim: Vec<(usize, Want)> = wants
            .iter()
            .enumerate()
            .filter(|(i, _)| got[*i].is_none())
            .map(|(i, w)| (i, w.clone()))
            .collect();
        let mut keys = Vec::new();
        if !to_claim.is_empty() {
            if to_claim
                .iter()
                .any(|(_, w)| matches!(w, Want::Address { .. } | Want::Mac { .. }))
            {
                self.require_majority("claim an address or MAC outside this node's blocks")?;
            }
            let rest: Vec<Want> = to_claim.iter().map(|(_, w)| w.clone()).collect();
            let (claimed, k) = self.claim_all(holder, &rest).await?;
            keys = k;
            for ((i, _), g) in to_claim.iter().zip(claimed.0) {
                got[*i] = Some(g);
            }
        }
        let got = got
            .into_iter()
            .collect::<Option<Vec<Got>>>()
            .ok_or("internal: an allocation left a value out")?;
        Ok((Claimed(got), keys))
    }

    /// A value for `want` out of this node's blocks, when it is one they give (an address or
    /// MAC not asked for explicitly) and they still have one.
    async fn block_value(&self, want: &Want, holder: &ObjectId) -> Result<Option<Got>, String> {
        Ok(match want {
            Want::Address {
                pool,
                explicit: None,
            } => self
                .take_from_blocks(&BlockSpace::Pool(pool.clone()), holder)
                .await?
                .map(|v| Got::Address(pool.clone(), std::net::Ipv4Addr::from(v))),
            Want::Mac { explicit: None } => self
                .take_from_blocks(&BlockSpace::Mac, holder)
                .await?
                .map(|v| Got::Mac(blocks::mac_of(v))),
            _ => None,
        })
    }

    /// Claims an object's VNI and name, then publishes it: of two nodes creating objects with
    /// the same name or VNI at once, the older claim wins and the other is told so.
    /// A new subnet also claims its first address block in the same claim window
    /// ([`ConfigService::first_block_for`]).
    pub(super) async fn create_unique(&self, plan: UniquePlan) -> Result<Value, String> {
        let first_block = match &plan.object {
            TenantObject::Subnet(s) => self.first_block_for(s),
            _ => None,
        };
        if let Some(b) = &first_block {
            self.publish_blocks(std::slice::from_ref(b)).await?;
        }
        let wants: Vec<Want> = plan.values.iter().cloned().map(Want::Unique).collect();
        let created = async {
            let (_, claims) = self.claim_all(plan.object.id(), &wants).await?;
            self.publish_after_claims(plan.object.clone(), &claims)
                .await
        }
        .await;
        if let Some(b) = first_block {
            match created {
                Ok(()) => {
                    self.keep_won_blocks(&[b]).await;
                }
                Err(_) => self.delete_keys(&[b.key()]).await,
            }
        }
        created?;
        Ok(ops::object_json(&plan.object))
    }

    pub(super) async fn create_port(&self, plan: PortPlan) -> Result<Value, String> {
        let wants = [
            Want::Address {
                pool: plan.subnet.clone(),
                explicit: plan.ip,
            },
            Want::Mac { explicit: plan.mac },
        ];
        let (got, claims) = self.allocate(&plan.id, &wants).await?;
        let (Some(ip), Some(mac)) = (got.address(0), got.mac(1)) else {
            return Err("internal: allocation returned the wrong shape".into());
        };
        let port = ops::finish_port(&plan, ip, mac)?;
        self.publish_after_claims(TenantObject::Port(port.clone()), &claims)
            .await?;
        info!(port = %port.id, ip = %ip, mac = %mac, "port created");
        Ok(ops::object_json(&TenantObject::Port(port)))
    }

    pub(super) async fn create_fip(&self, plan: FipPlan) -> Result<Value, String> {
        let wants = [Want::Address {
            pool: plan.external_network.clone(),
            explicit: plan.ip,
        }];
        let (got, claims) = self.allocate(&plan.id, &wants).await?;
        let ip = got
            .address(0)
            .ok_or("internal: allocation returned the wrong shape")?;
        let fip = ops::finish_fip(&plan, ip)?;
        self.publish_after_claims(TenantObject::FloatingIp(fip.clone()), &claims)
            .await?;
        Ok(ops::object_json(&TenantObject::FloatingIp(fip)))
    }

    /// Allocates a router's external address and missing SNAT ports, then publishes it.
    pub(super) async fn allocate_router(
        &self,
        mut spec: mesh_proto::RouterSpec,
    ) -> Result<Value, String> {
        let Some(gw) = spec.gateway.clone() else {
            return Err("internal: router without gateway needs no allocation".into());
        };
        let mut wants = Vec::new();
        if gw.external_ip.is_none() {
            wants.push(Want::Address {
                pool: gw.external_network.clone(),
                explicit: None,
            });
        }
        let missing: Vec<ObjectId> = spec
            .interfaces
            .iter()
            .filter(|s| !spec.snat_ports.contains_key(*s))
            .cloned()
            .collect();
        for subnet in &missing {
            wants.push(Want::Address {
                pool: subnet.clone(),
                explicit: None,
            });
            wants.push(Want::Mac { explicit: None });
        }
        let (got, claims) = self.allocate(&spec.id, &wants).await?;
        let mut i = 0;
        if let Some(g) = spec.gateway.as_mut().filter(|g| g.external_ip.is_none()) {
            g.external_ip = got.address(i);
            i += 1;
        }
        for subnet in missing {
            let (Some(ip), Some(mac)) = (got.address(i), got.mac(i + 1)) else {
                return Err("internal: allocation returned the wrong shape".into());
            };
            spec.snat_ports
                .insert(subnet, mesh_proto::SnatPort { ip, mac });
            i += 2;
        }
        let router = mesh_proto::Router::new(spec).map_err(|e| e.to_string())?;
        self.publish_after_claims(TenantObject::Router(router.clone()), &claims)
            .await?;
        Ok(ops::object_json(&TenantObject::Router(router)))
    }

    /// Makes sure this node has a FIP gateway port (`fg-`) on `external_network`: a port on the
    /// external network hosted here, with an address and MAC claimed like any other. Returns it.
    pub async fn ensure_fip_gateway(
        &self,
        external_network: &ObjectId,
    ) -> Result<mesh_proto::Port, String> {
        let _one_at_a_time = self.writes.lock().await;
        let view = self.view.load();
        if let Some(p) = view
            .tenant
            .ports()
            .find(|p| &p.network == external_network && p.host == self.me)
        {
            return Ok(p.clone());
        }
        if view
            .tenant
            .get(ObjectKind::ExternalNetwork, external_network)
            .is_none()
        {
            return Err(format!("no external network {external_network}"));
        }
        let id = self.new_id(ObjectKind::Port, &view.tenant);
        let wants = [
            Want::Address {
                pool: external_network.clone(),
                explicit: None,
            },
            Want::Mac { explicit: None },
        ];
        let (got, claims) = self.allocate(&id, &wants).await?;
        let (Some(ip), Some(mac)) = (got.address(0), got.mac(1)) else {
            return Err("internal: allocation returned the wrong shape".into());
        };
        let name = mesh_proto::Name::new(format!("fg.{}.{}", self.me, external_network.short()))
            .map_err(|e| e.to_string())?;
        let port = mesh_proto::Port::new(mesh_proto::PortSpec {
            id,
            name,
            network: external_network.clone(),
            mac,
            fixed_ips: vec![ip],
            host: self.me.clone(),
            device: None,
            allowed_address_pairs: Vec::new(),
            metadata: Default::default(),
        })
        .map_err(|e| e.to_string())?;
        self.publish_after_claims(TenantObject::Port(port.clone()), &claims)
            .await?;
        info!(port = %port.id, ip = %ip, "FIP gateway port created");
        Ok(port)
    }

    /// Publishes an object whose addresses were just claimed, then withdraws the claims (in that
    /// order, so a peer sees the claim or the object, never neither), and waits until the local
    /// view shows it.
    pub(super) async fn publish_after_claims(
        &self,
        obj: TenantObject,
        claims: &[String],
    ) -> Result<(), String> {
        let (kind, id) = (obj.kind(), obj.id().clone());
        let view = self.view.load();
        let rec = Record::object(obj, self.version(&view.tenant));
        if let Err(e) = self.publish_authorised(std::slice::from_ref(&rec)).await {
            self.delete_keys(claims).await;
            return Err(e);
        }
        self.delete_keys(claims).await;
        let v = rec.version().clone();
        self.wait_visible(|t| t.record(kind, &id).is_some_and(|r| r.version() >= &v))
            .await;
        Ok(())
    }
}
