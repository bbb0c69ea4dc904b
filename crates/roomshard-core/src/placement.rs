//! Where a room lives: its placement record and the state machine that moves it.
//!
//! The placement is the control plane's directory entry for a room (one row per room in the
//! host's global database). Flows change it only through [`Placement::transition`], which refuses
//! any move the state machine does not allow, so a crashed job resumed twice, or two operators
//! racing, cannot put a room somewhere inconsistent. See `docs/core-contracts.md` for the diagram.

use crate::error::{Error, Result};
use crate::ids::RoomId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which copy of a room's data an operation addresses.
///
/// A room's rows and objects live either in the host's shared ("pooled") tables and bucket,
/// filtered by the room key, or in the room's own dedicated shard and bucket. Copy jobs read one
/// and write the other, and export works from either, so the stores take a `Scope`, not just a
/// room id. A pooled scope is mapped by the provider's own configuration (shared schema +
/// `WHERE room_id = …`, a prefix of the shared bucket); a dedicated scope carries the room's
/// [`Location`] from its placement, and the provider goes exactly there — it never re-derives a
/// place from a naming rule, which is what lets rooms live on several servers, in pinned
/// regions, and in resources a customer owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scope", content = "room")]
pub enum Scope {
    /// The room's rows in the shared tables and its objects in the shared bucket.
    Pooled(RoomId),
    /// The room's dedicated shard and bucket, where its [`Location`] says.
    Dedicated(RoomId, Location),
}

impl Scope {
    /// The room addressed.
    pub fn room(&self) -> &RoomId {
        match self {
            Scope::Pooled(r) | Scope::Dedicated(r, _) => r,
        }
    }

    /// The dedicated location, for a dedicated scope.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Scope::Pooled(_) => None,
            Scope::Dedicated(_, at) => Some(at),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Pooled(r) => write!(f, "pooled room {r}"),
            Scope::Dedicated(r, _) => write!(f, "dedicated room {r}"),
        }
    }
}

/// Where a room's dedicated resources are: the shard (server and namespace, as one provider
/// URL), the bucket, the key and the region — what its placement records.
///
/// The flows write it into the placement **before** creating anything (the shard and bucket
/// locations come from [`ShardStore::locate_shard`](crate::ShardStore::locate_shard) and
/// [`MediaStore::locate_bucket`](crate::MediaStore::locate_bucket), or are adopted), so a crash
/// in between leaves a placement naming everything that may exist, and an abort removes
/// exactly that.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Location {
    /// The shard, in the shard store's URL form
    /// (`sqlite:///var/lib/mesh/shards/room_general.sqlite3`,
    /// `postgres://db1/mesh?schema=room_general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ServerUrl>,
    /// The room's own bucket (or directory) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// The room key's provider reference (a KMS key ARN, `local:room/<id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The region the room's data must stay in, if pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Which of these a customer owns (bring your own): roomshard uses them but never creates
    /// or deletes them.
    #[serde(default, skip_serializing_if = "Adopted::is_none")]
    pub adopted: Adopted,
}

/// Which of a room's dedicated resources are adopted: a customer's own database, bucket or key
/// that roomshard uses ("use this database; never create or delete it").
///
/// Providers check that an adopted resource exists (`NotFound` otherwise) instead of creating
/// it, and every drop leaves it — with what is in it — where it is: recentralising or aborting a
/// room on a customer's resources hands them back untouched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Adopted {
    /// The shard (database, schema or file).
    #[serde(default)]
    pub shard: bool,
    /// The bucket.
    #[serde(default)]
    pub bucket: bool,
    /// The key.
    #[serde(default)]
    pub key: bool,
}

impl Adopted {
    /// Nothing adopted: roomshard created (or will create) every resource.
    pub fn is_none(&self) -> bool {
        !(self.shard || self.bucket || self.key)
    }
}

/// The name under which a host registered a provider (`default`, `db2`, `acme-bucket`), as a
/// placement records it.
///
/// Names, not URLs, go into placements: a provider's URL may carry a secret and may change (a
/// password rotated, a server renamed) while the rooms on it stay where they are. A name is
/// 1–63 characters of `a-z`, `0-9`, `-` and `_`, starting with a letter or digit, so it is safe
/// in a column, a log line and a CLI flag alike.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderName(String);

impl ProviderName {
    /// The providers the host was constructed with: the ones that also serve pooled rooms.
    pub const DEFAULT: &'static str = "default";

    /// Checks and wraps a name.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty or longer than 63-character name, or one with a character
    /// outside `a-z 0-9 - _` (or starting with `-`/`_`).
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            && name.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(ProviderName(name))
        } else {
            Err(Error::invalid(
                "provider name",
                format!(
                    "{name:?}: use 1-63 characters of a-z, 0-9, '-' and '_', starting with a \
                     letter or digit"
                ),
            ))
        }
    }

    /// `default`.
    pub fn default_name() -> Self {
        ProviderName(Self::DEFAULT.to_string())
    }

    /// Whether this is `default`.
    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ProviderName {
    fn default() -> Self {
        Self::default_name()
    }
}

impl TryFrom<String> for ProviderName {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        ProviderName::new(s)
    }
}

impl From<ProviderName> for String {
    fn from(n: ProviderName) -> String {
        n.0
    }
}

impl FromStr for ProviderName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ProviderName::new(s)
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which registered provider of each kind holds a room's dedicated resources.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderNames {
    /// The shard store of the room's own shard.
    #[serde(default)]
    pub shards: ProviderName,
    /// The media store of the room's own bucket.
    #[serde(default)]
    pub media: ProviderName,
    /// The key manager of the room's key.
    #[serde(default)]
    pub keys: ProviderName,
}

impl ProviderNames {
    /// Whether all three are `default`.
    pub fn is_default(&self) -> bool {
        self.shards.is_default() && self.media.is_default() && self.keys.is_default()
    }
}

/// A connection URL or DSN for a server (`postgres://user:secret@db1/mesh`).
///
/// It may carry a password, so `Debug` and `Display` hide the userinfo's password
/// (`postgres://user:***@db1/mesh`); [`expose`](ServerUrl::expose) gives the real string for
/// connecting, and serialisation writes it unchanged (placements are stored, not logged).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerUrl(String);

impl ServerUrl {
    /// Wraps a URL. Not parsed: each provider knows its own URL forms.
    pub fn new(url: impl Into<String>) -> Self {
        ServerUrl(url.into())
    }

    /// The URL, including any password.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        let Some(start) = s.find("://").map(|i| i + 3) else {
            return s.clone();
        };
        let authority_end = s[start..]
            .find(['/', '?', '#'])
            .map_or(s.len(), |i| start + i);
        let Some(at) = s[start..authority_end].rfind('@').map(|i| start + i) else {
            return s.clone();
        };
        match s[start..at].find(':').map(|i| start + i) {
            Some(colon) => format!("{}:***{}", &s[..colon], &s[at..]),
            None => s.clone(),
        }
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ServerUrl").field(&self.redacted()).finish()
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A room's data-sovereignty profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Pooled: the shared database, bucket and key.
    Standard,
    /// A dedicated shard, bucket and key on the operator's infrastructure.
    Sovereign,
    /// Bring your own: the customer's DSN, bucket and KMS/Vault.
    Byo,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 3] = [Profile::Standard, Profile::Sovereign, Profile::Byo];

    /// The profile's name as written in configuration: `standard`, `sovereign`, `byo`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Standard => "standard",
            Profile::Sovereign => "sovereign",
            Profile::Byo => "byo",
        }
    }
}

impl FromStr for Profile {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Profile::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                Error::invalid("profile", format!("{s:?}: use standard, sovereign or byo"))
            })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a room is in its life. The allowed moves ([`can_transition_to`](Self::can_transition_to)):
///
/// ```text
/// Pooled ──► Provisioning ──► Copying ──► Cutover ──► Sovereign ◄──► Sealed
///   ▲             │             │  ▲       │  │         │  ▲
///   │             │             │  └───────┘  │         ▼  │
///   ├─────────────┴─────────────┴─────────────┘   Recentralising
///   │                                                    │
///   └────────────────────────────────────────────────────┘
/// ```
///
/// - decentralise: `Pooled → Provisioning → Copying → Cutover → Sovereign`;
/// - parity failed during cutover: `Cutover → Copying` (writes reopen, catch up again);
/// - abort a decentralise: `Provisioning | Copying | Cutover → Pooled` (the pooled copy was
///   never given up);
/// - revoke and restore: `Sovereign ⇄ Sealed`;
/// - recentralise: `Sovereign → Recentralising → Pooled`, aborted by `Recentralising → Sovereign`;
/// - every state may "move" to itself: a resumed job re-applies the state it crashed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementState {
    /// In the shared database, bucket and key.
    Pooled,
    /// Its dedicated shard, bucket and key are being created; pooled data still serves.
    Provisioning,
    /// Rows and objects are being copied; pooled data still serves and stays writable.
    Copying,
    /// Read-only while the final delta is copied and parity checked; the router answers
    /// "retry" to writes.
    Cutover,
    /// Served from its dedicated shard.
    Sovereign,
    /// Its key grant was revoked: nothing is served until the grant is restored.
    Sealed,
    /// Being copied back into the shared tables; the dedicated shard still serves.
    Recentralising,
}

impl PlacementState {
    /// Every state.
    pub const ALL: [PlacementState; 7] = [
        PlacementState::Pooled,
        PlacementState::Provisioning,
        PlacementState::Copying,
        PlacementState::Cutover,
        PlacementState::Sovereign,
        PlacementState::Sealed,
        PlacementState::Recentralising,
    ];

    /// Whether the state machine allows moving from `self` to `next`.
    pub fn can_transition_to(self, next: PlacementState) -> bool {
        use PlacementState::*;
        self == next
            || matches!(
                (self, next),
                // decentralise
                (Pooled, Provisioning)
                    | (Provisioning, Copying)
                    | (Copying, Cutover)
                    | (Cutover, Sovereign)
                    // parity failed: reopen writes and catch up again
                    | (Cutover, Copying)
                    // abort a decentralise: pooled data was never given up
                    | (Provisioning | Copying | Cutover, Pooled)
                    // revoke and restore
                    | (Sovereign, Sealed)
                    | (Sealed, Sovereign)
                    // recentralise, and its abort
                    | (Sovereign, Recentralising)
                    | (Recentralising, Pooled)
                    | (Recentralising, Sovereign)
            )
    }

    /// Whether the dedicated shard (not the pooled tables) holds the authoritative copy.
    pub fn serves_from_shard(self) -> bool {
        matches!(
            self,
            PlacementState::Sovereign | PlacementState::Sealed | PlacementState::Recentralising
        )
    }

    /// The state's name as stored: `pooled`, `provisioning`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            PlacementState::Pooled => "pooled",
            PlacementState::Provisioning => "provisioning",
            PlacementState::Copying => "copying",
            PlacementState::Cutover => "cutover",
            PlacementState::Sovereign => "sovereign",
            PlacementState::Sealed => "sealed",
            PlacementState::Recentralising => "recentralising",
        }
    }
}

impl FromStr for PlacementState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PlacementState::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::invalid("placement state", format!("{s:?} is not a state")))
    }
}

impl fmt::Display for PlacementState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room's placement: the control plane's record of where its data, objects and key are.
///
/// `is_sharded`, `shard_url`, `media_bucket` and `kms_key_ref` are the host's existing fields
/// (Mesh's `isSharded`, `shardUrl`, `mediaBucket`, `kmsKeyArn`); the rest is roomshard's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The room.
    pub room: RoomId,
    /// Whether the dedicated shard serves the room (kept equal to
    /// [`PlacementState::serves_from_shard`] by [`transition`](Placement::transition)).
    pub is_sharded: bool,
    /// The server of the dedicated shard, once provisioned.
    pub shard_url: Option<ServerUrl>,
    /// The room's own bucket, once provisioned.
    pub media_bucket: Option<String>,
    /// The room key's provider reference (e.g. a KMS key ARN), once provisioned.
    pub kms_key_ref: Option<String>,
    /// The profile.
    pub profile: Profile,
    /// The region data must stay in, if pinned.
    pub region: Option<String>,
    /// Which of the shard, bucket and key are the customer's own (never created or deleted).
    #[serde(default)]
    pub adopted: Adopted,
    /// Which of the host's registered providers hold the room's dedicated shard, bucket and
    /// key (all [`ProviderName::DEFAULT`] unless a decentralise chose others): how a host with
    /// several database servers, or its own bucket beside a customer's, finds them again.
    #[serde(default)]
    pub providers: ProviderNames,
    /// Where the room is in its life.
    pub state: PlacementState,
    /// Bumped on every change: writers compare-and-swap on it, so concurrent updates conflict
    /// instead of overwriting each other; receipts carry it as their monotonic version.
    pub version: u64,
}

impl Placement {
    /// A room's first placement: pooled, under the `standard` profile, version 0.
    pub fn pooled(room: RoomId) -> Self {
        Placement {
            room,
            is_sharded: false,
            shard_url: None,
            media_bucket: None,
            kms_key_ref: None,
            profile: Profile::Standard,
            region: None,
            adopted: Adopted::default(),
            providers: ProviderNames::default(),
            state: PlacementState::Pooled,
            version: 0,
        }
    }

    /// Where the room's dedicated resources are (or will be), as recorded.
    pub fn location(&self) -> Location {
        Location {
            shard: self.shard_url.clone(),
            bucket: self.media_bucket.clone(),
            key: self.kms_key_ref.clone(),
            region: self.region.clone(),
            adopted: self.adopted,
        }
    }

    /// The dedicated scope at the recorded location (whatever the state).
    pub fn dedicated(&self) -> Scope {
        Scope::Dedicated(self.room.clone(), self.location())
    }

    /// The scope that holds the room's authoritative data now.
    pub fn scope(&self) -> Scope {
        if self.is_sharded {
            self.dedicated()
        } else {
            Scope::Pooled(self.room.clone())
        }
    }

    /// Moves to `next` if the state machine allows it: updates `is_sharded` and bumps `version`.
    ///
    /// Returns `Ok(false)` without bumping for a move to the current state (idempotent replay),
    /// `Ok(true)` for a real move, and [`Error::Conflict`] for a forbidden one.
    pub fn transition(&mut self, next: PlacementState) -> Result<bool> {
        if !self.state.can_transition_to(next) {
            return Err(Error::conflict(format!(
                "room {} cannot move from {} to {}",
                self.room, self.state, next
            )));
        }
        if self.state == next {
            return Ok(false);
        }
        self.state = next;
        self.is_sharded = next.serves_from_shard();
        self.version += 1;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::PlacementState::*;
    use super::*;

    const ALLOWED: [(PlacementState, PlacementState); 13] = [
        (Pooled, Provisioning),
        (Provisioning, Copying),
        (Copying, Cutover),
        (Cutover, Sovereign),
        (Cutover, Copying),
        (Provisioning, Pooled),
        (Copying, Pooled),
        (Cutover, Pooled),
        (Sovereign, Sealed),
        (Sealed, Sovereign),
        (Sovereign, Recentralising),
        (Recentralising, Pooled),
        (Recentralising, Sovereign),
    ];

    #[test]
    fn exactly_the_documented_transitions_are_allowed() {
        for from in PlacementState::ALL {
            for to in PlacementState::ALL {
                let expected = from == to || ALLOWED.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn cutover_cannot_be_skipped() {
        assert!(!Pooled.can_transition_to(Sovereign));
        assert!(!Pooled.can_transition_to(Copying));
        assert!(!Provisioning.can_transition_to(Sovereign));
        assert!(!Copying.can_transition_to(Sovereign));
    }

    #[test]
    fn sealed_room_cannot_be_moved_or_recentralised() {
        for to in [Pooled, Provisioning, Copying, Cutover, Recentralising] {
            assert!(!Sealed.can_transition_to(to), "sealed -> {to}");
        }
        for from in [Pooled, Provisioning, Copying, Cutover, Recentralising] {
            assert!(!from.can_transition_to(Sealed), "{from} -> sealed");
        }
    }

    #[test]
    fn recentralise_only_from_sovereign() {
        for from in [Pooled, Provisioning, Copying, Cutover, Sealed] {
            assert!(!from.can_transition_to(Recentralising), "{from}");
        }
    }

    #[test]
    fn transition_is_idempotent_and_versions_real_moves() {
        let mut p = Placement::pooled(RoomId::new("general").expect("valid"));
        assert!(!p.transition(Pooled).expect("self"));
        assert_eq!(p.version, 0);
        for next in [Provisioning, Copying, Cutover, Sovereign] {
            assert!(p.transition(next).expect("allowed"));
            assert!(!p.transition(next).expect("replay"));
        }
        assert_eq!(p.version, 4);
        assert!(p.is_sharded);
        assert_eq!(p.scope(), Scope::Dedicated(p.room.clone(), p.location()));
        p.transition(Recentralising).expect("allowed");
        assert!(p.is_sharded, "the shard serves until recentralising ends");
        p.transition(Pooled).expect("allowed");
        assert!(!p.is_sharded);
        assert_eq!(p.version, 6);
    }

    #[test]
    fn forbidden_transition_is_a_conflict_and_changes_nothing() {
        let mut p = Placement::pooled(RoomId::new("general").expect("valid"));
        let before = p.clone();
        let err = p.transition(Sovereign).expect_err("forbidden");
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("pooled to sovereign"), "{err}");
        assert_eq!(p, before);
    }

    #[test]
    fn names_round_trip() {
        for s in PlacementState::ALL {
            assert_eq!(s.as_str().parse::<PlacementState>().expect("parses"), s);
            assert_eq!(
                serde_json::to_string(&s).expect("serialises"),
                format!("\"{s}\"")
            );
        }
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().expect("parses"), p);
            assert_eq!(
                serde_json::to_string(&p).expect("serialises"),
                format!("\"{p}\"")
            );
        }
        assert!("Sovereign".parse::<Profile>().is_err());
        assert!("".parse::<PlacementState>().is_err());
    }

    #[test]
    fn provider_names_are_checked_and_default_to_default() {
        for good in ["default", "db2", "acme-bucket", "eu_1", "9"] {
            assert_eq!(ProviderName::new(good).expect("valid").as_str(), good);
        }
        for bad in [
            "",
            "DB2",
            "-x",
            "_x",
            "a b",
            "a/b",
            "db2;drop",
            &"a".repeat(64),
        ] {
            let err = ProviderName::new(bad).expect_err("refused").to_string();
            assert!(err.contains("provider name"), "{bad:?}: {err}");
        }
        // A placement stored before providers were named reads as all-default.
        let room = RoomId::new("r1").expect("room id");
        let mut json = serde_json::to_value(Placement::pooled(room)).expect("serialises");
        json.as_object_mut().expect("an object").remove("providers");
        let p: Placement = serde_json::from_value(json).expect("reads without providers");
        assert!(p.providers.is_default());
        let bad = serde_json::json!({"shards": "Nope"});
        assert!(serde_json::from_value::<ProviderNames>(bad).is_err());
    }

    #[test]
    fn server_url_never_prints_its_password() {
        let url =
            ServerUrl::new("postgres://mesh:s3cr3t@db1.example.org:5432/mesh?sslmode=require");
        assert_eq!(
            url.to_string(),
            "postgres://mesh:***@db1.example.org:5432/mesh?sslmode=require"
        );
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert!(url.expose().contains("s3cr3t"));
        for plain in [
            "postgres://db1/mesh",
            "postgres://mesh@db1/mesh",
            "/var/lib/rooms",
        ] {
            assert_eq!(ServerUrl::new(plain).to_string(), plain);
        }
        let at_in_password = ServerUrl::new("postgres://u:p@ss@db1/x");
        assert!(!at_in_password.to_string().contains("p@ss"));
    }
}
