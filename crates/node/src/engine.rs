//! Wiring of one validator: block broadcast buffer, marshal (ordered finalized blocks and
//! backfill), and simplex consensus driving [`Application`] through marshal's `Deferred`.

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::time::Duration;

use commonware_broadcast::buffered;
use commonware_consensus::marshal::{self, core::Actor as Marshal, standard::Deferred};
use commonware_consensus::simplex::{self, elector::RoundRobin, scheme::ed25519::Scheme};
use commonware_consensus::types::{Epoch, FixedEpocher, ViewDelta};
use commonware_cryptography::certificate::{ConstantProvider, Scheme as _};
use commonware_cryptography::{Sha256, Signer as _, ed25519};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::buffer::paged::CacheRef;
use commonware_runtime::{BufferPooler, Clock, Handle, Metrics, Spawner, Storage};
use commonware_storage::archive::immutable;
use commonware_utils::ordered::Set;
use commonware_utils::{NZU16, NZU64, NZUsize};
use governor::Quota;
use rand::{CryptoRng, Rng};

use crate::application::{Application, ChainSpec, NodeError};
use crate::gossip::{self, TRANSACTIONS_CHANNEL};
use crate::ledger::Ledger;

/// Signing namespace of every consensus message of this chain.
pub const NAMESPACE: &[u8] = b"_BASED";

pub const VOTES_CHANNEL: u64 = 0;
pub const CERTIFICATES_CHANNEL: u64 = 1;
pub const RESOLVER_CHANNEL: u64 = 2;
pub const BLOCKS_CHANNEL: u64 = 3;
pub const BACKFILL_CHANNEL: u64 = 4;

const FREEZER_TABLE_INITIAL_SIZE: u32 = 1 << 14;
const FREEZER_TABLE_RESIZE_FREQUENCY: u8 = 4;
const FREEZER_TABLE_RESIZE_CHUNK_SIZE: u32 = 1 << 16;
const FREEZER_JOURNAL_TARGET_SIZE: u64 = 1 << 30;
const FREEZER_JOURNAL_COMPRESSION: Option<u8> = Some(3);
const PRUNABLE_ITEMS_PER_SECTION: NonZeroU64 = NZU64!(4_096);
const IMMUTABLE_ITEMS_PER_SECTION: NonZeroU64 = NZU64!(262_144);
const REPLAY_BUFFER: NonZeroUsize = NZUsize!(8 * 1024 * 1024);
const WRITE_BUFFER: NonZeroUsize = NZUsize!(1024 * 1024);
const PAGE_CACHE_PAGE_SIZE: std::num::NonZeroU16 = NZU16!(4_096);
const PAGE_CACHE_CAPACITY: NonZeroUsize = NZUsize!(2_048);
const MAILBOX_SIZE: usize = 1024;
const ACTIVITY_TIMEOUT: u64 = 256;
const SKIP_TIMEOUT: u64 = 32;

/// Per-peer, per-second message quotas for the channels above, sized from the block rate so
/// that fast blocks are not silently dropped (docs/node-design.md section 7).
pub fn channel_quotas(block_time_ms: u64) -> [(u64, Quota); 6] {
    let rate = u32::try_from((1000 / block_time_ms.max(1)).max(1)).unwrap_or(u32::MAX);
    let per_second = |n: u32| Quota::per_second(NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN));
    [
        (VOTES_CHANNEL, per_second(128.max(rate.saturating_mul(16)))),
        (CERTIFICATES_CHANNEL, per_second(128.max(rate.saturating_mul(16)))),
        (RESOLVER_CHANNEL, per_second(128.max(rate.saturating_mul(16)))),
        (BLOCKS_CHANNEL, per_second(32.max(rate.saturating_mul(8)))),
        (BACKFILL_CHANNEL, per_second(64.max(rate.saturating_mul(8)))),
        (TRANSACTIONS_CHANNEL, per_second(256)),
    ]
}

/// The six registered p2p channels, in the order of the constants above.
pub struct Channels<S, R> {
    pub votes: (S, R),
    pub certificates: (S, R),
    pub resolver: (S, R),
    pub blocks: (S, R),
    pub backfill: (S, R),
    pub transactions: (S, R),
}

pub struct ValidatorConfig<B, P> {
    pub signer: ed25519::PrivateKey,
    pub spec: ChainSpec,
    pub ledger: Ledger,
    pub blocker: B,
    pub provider: P,
    /// Prefix of the commonware storage partitions (consensus journal, marshal archives).
    pub partition_prefix: String,
}

/// Consensus waits this long for a paced proposal before voting to skip the leader.
pub fn leader_timeout(block_time_ms: u64) -> Duration {
    Duration::from_millis(block_time_ms) + Duration::from_secs(1)
}

/// Starts a validator; the returned handle runs until the engine stops.
pub async fn start_validator<E, B, P, S, R>(
    context: E,
    config: ValidatorConfig<B, P>,
    channels: Channels<S, R>,
) -> Result<(Application, Handle<()>), NodeError>
where
    E: BufferPooler
        + Clock
        + governor::clock::Clock
        + Rng
        + CryptoRng
        + Spawner
        + Storage
        + Metrics,
    B: Blocker<PublicKey = ed25519::PublicKey>,
    P: Provider<PublicKey = ed25519::PublicKey>,
    S: Sender<PublicKey = ed25519::PublicKey>,
    R: Receiver<PublicKey = ed25519::PublicKey>,
{
    let ValidatorConfig { signer, spec, ledger, blocker, provider, partition_prefix } = config;
    let public_key = signer.public_key();
    let block_time_ms = spec.block_time_ms;
    let participants = Set::from_iter_dedup(spec.validators.iter().cloned());
    let scheme = Scheme::signer(NAMESPACE, participants, signer)
        .ok_or_else(|| NodeError::Genesis("the signer is not a validator".into()))?;
    let application = Application::new(ledger, spec)?;
    application.metrics().register(&context.with_label("node"));
    let genesis_digest = crate::application::digest_bytes(&application.genesis_digest());

    let (buffer, buffer_mailbox) = buffered::Engine::new(
        context.with_label("buffer"),
        buffered::Config {
            public_key: public_key.clone(),
            mailbox_size: MAILBOX_SIZE,
            deque_size: 10,
            priority: true,
            codec_config: (),
            peer_provider: provider.clone(),
        },
    );
    let page_cache = CacheRef::from_pooler(&context, PAGE_CACHE_PAGE_SIZE, PAGE_CACHE_CAPACITY);
    let finalizations = immutable::Archive::init(
        context.with_label("finalizations_by_height"),
        archive_config(
            &partition_prefix,
            "finalizations",
            &page_cache,
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .map_err(|e| NodeError::Storage(e.to_string()))?;
    let blocks = immutable::Archive::init(
        context.with_label("finalized_blocks"),
        archive_config(&partition_prefix, "blocks", &page_cache, ()),
    )
    .await
    .map_err(|e| NodeError::Storage(e.to_string()))?;

    let epocher = FixedEpocher::new(NZU64!(u64::MAX));
    let (marshal, marshal_mailbox, _processed) = Marshal::init(
        context.with_label("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::new(scheme.clone()),
            epocher: epocher.clone(),
            partition_prefix: partition_prefix.clone(),
            mailbox_size: MAILBOX_SIZE,
            view_retention_timeout: ViewDelta::new(ACTIVITY_TIMEOUT * 10),
            prunable_items_per_section: PRUNABLE_ITEMS_PER_SECTION,
            replay_buffer: REPLAY_BUFFER,
            key_write_buffer: WRITE_BUFFER,
            value_write_buffer: WRITE_BUFFER,
            block_codec_config: (),
            max_repair: NZUsize!(20),
            max_pending_acks: NZUsize!(16),
            page_cache: page_cache.clone(),
            strategy: Sequential,
        },
    )
    .await;
    let deferred = Deferred::new(
        context.with_label("deferred"),
        application.clone(),
        marshal_mailbox.clone(),
        epocher,
    );

    let consensus = simplex::Engine::new(
        context.with_label("consensus"),
        simplex::Config {
            epoch: Epoch::zero(),
            scheme,
            elector: RoundRobin::<Sha256>::shuffled(&genesis_digest),
            blocker: blocker.clone(),
            automaton: deferred.clone(),
            relay: deferred.clone(),
            reporter: marshal_mailbox.clone(),
            strategy: Sequential,
            partition: format!("{partition_prefix}-consensus"),
            mailbox_size: MAILBOX_SIZE,
            replay_buffer: REPLAY_BUFFER,
            write_buffer: WRITE_BUFFER,
            page_cache,
            leader_timeout: leader_timeout(block_time_ms),
            certification_timeout: leader_timeout(block_time_ms) + Duration::from_secs(1),
            timeout_retry: Duration::from_secs(10),
            activity_timeout: ViewDelta::new(ACTIVITY_TIMEOUT),
            skip_timeout: ViewDelta::new(SKIP_TIMEOUT),
            fetch_timeout: Duration::from_secs(1),
            fetch_concurrent: 4,
        },
    );

    let backfill = marshal::resolver::p2p::init(
        &context.with_label("backfill"),
        marshal::resolver::p2p::Config {
            public_key,
            peer_provider: provider,
            blocker,
            mailbox_size: MAILBOX_SIZE,
            initial: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            fetch_retry_timeout: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.backfill,
    );

    // Buffer and marshal start before consensus so that replayed consensus events find them.
    let buffer_handle = buffer.start(channels.blocks);
    let marshal_handle = marshal.start(deferred, buffer_mailbox, backfill);
    let consensus_handle =
        consensus.start(channels.votes, channels.certificates, channels.resolver);
    let gossip_application = application.clone();
    let gossip_handle = context
        .with_label("gossip")
        .spawn(move |context| gossip::run(context, gossip_application, channels.transactions));
    let handle = context.with_label("supervisor").spawn(move |_| async move {
        let stopped = futures::future::try_join_all([
            buffer_handle,
            marshal_handle,
            consensus_handle,
            gossip_handle,
        ])
        .await;
        if let Err(reason) = stopped {
            tracing::error!(?reason, "validator engine failed");
        }
    });
    Ok((application, handle))
}

fn archive_config<C>(
    partition_prefix: &str,
    name: &str,
    page_cache: &CacheRef,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{partition_prefix}-{name}-metadata"),
        freezer_table_partition: format!("{partition_prefix}-{name}-freezer-table"),
        freezer_table_initial_size: FREEZER_TABLE_INITIAL_SIZE,
        freezer_table_resize_frequency: FREEZER_TABLE_RESIZE_FREQUENCY,
        freezer_table_resize_chunk_size: FREEZER_TABLE_RESIZE_CHUNK_SIZE,
        freezer_key_partition: format!("{partition_prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_key_write_buffer: WRITE_BUFFER,
        freezer_value_partition: format!("{partition_prefix}-{name}-freezer-value"),
        freezer_value_write_buffer: WRITE_BUFFER,
        freezer_value_target_size: FREEZER_JOURNAL_TARGET_SIZE,
        freezer_value_compression: FREEZER_JOURNAL_COMPRESSION,
        ordinal_partition: format!("{partition_prefix}-{name}-ordinal"),
        ordinal_write_buffer: WRITE_BUFFER,
        items_per_section: IMMUTABLE_ITEMS_PER_SECTION,
        codec_config,
        replay_buffer: REPLAY_BUFFER,
    }
}
