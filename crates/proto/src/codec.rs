//! The protobuf codec of lanyard's own services: prost's, with one buffer setting changed.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// Initial encode and decode buffer of a call (tonic's default is 8 KiB). The node API's entry
/// messages stay under it (3 KiB of entries, or the bundles alone), so an open entry stream keeps
/// 4 KiB: 40 MiB less than 8 KiB with 10,000 agents.
const BUFFER_SIZE: usize = 4 * 1024;
/// Hand each encoded message to HTTP/2 at once, rather than packing ready messages into one
/// buffer up to tonic's default of 32 KiB. A response stream keeps its encode buffer, at the
/// largest size it ever reached, for as long as it is open: with 10,000 agents each holding an
/// entry stream, a buffer grown to 32 KiB by a full sync is 320 MiB of the server's memory. With
/// this, and the node API's full sets sent in messages of a few KiB, it stays at [`BUFFER_SIZE`].
const YIELD_THRESHOLD: usize = 1;

/// `ProstCodec` with [`BUFFER_SIZE`] and [`YIELD_THRESHOLD`]; `build.rs` has the generated admin
/// and node API code use it.
#[derive(Debug)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}
