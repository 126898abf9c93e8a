//! RFC 6962 / RFC 9162 §2.1 Merkle tree hashing with SHA-256: leaf and node hashes, an
//! incremental [`Frontier`] for appending, whole-tree roots, and inclusion and consistency
//! proofs with their verifiers. Every function is total: hostile sizes, indices and proofs give
//! an error, never a panic.

use aws_lc_rs::digest::{self, SHA256};

/// A SHA-256 tree hash.
pub type Hash = [u8; HASH_LEN];

/// Length of a [`Hash`] in bytes.
pub const HASH_LEN: usize = 32;

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a proof could not be made or did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf index is not below the tree size.
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange {
        /// The index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// More leaves were asked for than were given.
    #[error("tree size {size} is larger than the {available} leaves given")]
    NotEnoughLeaves {
        /// The tree size asked for.
        size: u64,
        /// How many leaf hashes were given.
        available: usize,
    },
    /// A consistency proof's old size is larger than its new size.
    #[error("old tree size {old_size} is larger than new tree size {new_size}")]
    SizesReversed {
        /// The old size.
        old_size: u64,
        /// The new size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for its index and sizes.
    #[error("proof has the wrong number of hashes ({len})")]
    WrongProofLength {
        /// How many hashes it had.
        len: usize,
    },
    /// The proof does not lead to the root it should.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    /// A frontier's stored nodes do not match its size.
    #[error("frontier of size {size} needs {expected} nodes, got {got}")]
    InvalidFrontier {
        /// The size given.
        size: u64,
        /// Nodes that size needs (one per set bit).
        expected: u32,
        /// Nodes given.
        got: usize,
    },
}

/// The right edge of a Merkle log: the roots of its perfect subtrees, largest first, one per set
/// bit of the size. O(log n) state; appending costs O(1) amortized hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

/// `H(0x00 || data)`: the hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// `H(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(&[NODE_PREFIX]);
    ctx.update(left);
    ctx.update(right);
    to_hash(ctx.finish())
}

/// `H("")`: the root of the empty tree.
pub fn empty_root() -> Hash {
    to_hash(digest::digest(&SHA256, b""))
}

/// The root of the tree whose leaf hashes are `leaves` (RFC 9162 §2.1.1 MTH).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split_point(leaves.len());
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index` in the tree of the first `size` of `leaves`
/// (RFC 9162 §2.1.3.1), ordered from the leaf's sibling up to the root's child.
pub fn inclusion_proof(index: u64, size: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    let tree = prefix(size, leaves)?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut proof = Vec::new();
    // `index < size <= leaves.len()`, so it fits in usize.
    path(
        usize::try_from(index).unwrap_or(usize::MAX),
        tree,
        &mut proof,
    );
    Ok(proof)
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let computed = root_from_inclusion(leaf, index, size, proof)?;
    if &computed != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The root that `proof` leads to from `leaf` at `index` in a tree of `size`, or an error if the
/// proof has the wrong shape.
pub fn root_from_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let wrong_length = ProofError::WrongProofLength { len: proof.len() };
    let mut fnode = index;
    let mut snode = size - 1;
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length);
    }
    Ok(r)
}

/// The consistency proof between the trees of the first `old_size` and `new_size` of `leaves`
/// (RFC 9162 §2.1.4.1). Empty when `old_size` is 0 or equals `new_size`.
pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    leaves: &[Hash],
) -> Result<Vec<Hash>, ProofError> {
    let tree = prefix(new_size, leaves)?;
    if old_size > new_size {
        return Err(ProofError::SizesReversed { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size > 0 && old_size < new_size {
        // `old_size < new_size <= leaves.len()`, so it fits in usize.
        subproof(
            usize::try_from(old_size).unwrap_or(usize::MAX),
            tree,
            true,
            &mut proof,
        );
    }
    Ok(proof)
}

/// Checks that the tree of `new_size` with root `new_root` extends the tree of `old_size` with
/// root `old_root` (RFC 9162 §2.1.4.2). Equal sizes need an empty proof and equal roots; an old
/// size of 0 needs an empty proof and the empty root.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    let wrong_length = ProofError::WrongProofLength { len: proof.len() };
    if old_size > new_size {
        return Err(ProofError::SizesReversed { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(wrong_length);
        }
        let expected_old = if old_size == 0 {
            empty_root()
        } else {
            *new_root
        };
        return if *old_root == expected_old {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // 0 < old_size < new_size from here on.
    // RFC 9162 §2.1.4.2 step 1: when the old size is a power of two the old root is the
    // implicit first element of the path.
    let (first, rest): (&Hash, &[Hash]) = match proof.split_first() {
        None => return Err(wrong_length),
        Some(_) if old_size.is_power_of_two() => (old_root, proof),
        Some(split) => split,
    };
    let mut fnode = old_size - 1;
    let mut snode = new_size - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(wrong_length);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

// === impl Frontier ===

impl Frontier {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a frontier the server stored: `nodes` are the perfect-subtree roots, largest
    /// first, as [`nodes`](Self::nodes) returned them.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Result<Self, ProofError> {
        let expected = size.count_ones();
        if nodes.len() != expected as usize {
            return Err(ProofError::InvalidFrontier {
                size,
                expected,
                got: nodes.len(),
            });
        }
        Ok(Self { size, nodes })
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut size = self.size;
        // Each trailing 1 bit of the old size is a perfect subtree the new leaf completes.
        while size & 1 == 1 {
            match self.nodes.pop() {
                Some(left) => hash = node_hash(&left, &hash),
                None => break, // unreachable: one node per set bit
            }
            size >>= 1;
        }
        self.nodes.push(hash);
        self.size = self.size.saturating_add(1);
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash of the tree so far.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// The perfect-subtree roots, largest first (for storing and [`from_parts`](Self::from_parts)).
    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }
}

fn to_hash(d: digest::Digest) -> Hash {
    let mut out = [0u8; HASH_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

/// The largest power of two smaller than `n` (`n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

fn prefix(size: u64, leaves: &[Hash]) -> Result<&[Hash], ProofError> {
    match usize::try_from(size) {
        Ok(n) if n <= leaves.len() => Ok(&leaves[..n]),
        _ => Err(ProofError::NotEnoughLeaves {
            size,
            available: leaves.len(),
        }),
    }
}

/// RFC 9162 PATH(m, D[n]); `m < tree.len()`.
fn path(m: usize, tree: &[Hash], out: &mut Vec<Hash>) {
    if tree.len() <= 1 {
        return;
    }
    let k = split_point(tree.len());
    if m < k {
        path(m, &tree[..k], out);
        out.push(root_of(&tree[k..]));
    } else {
        path(m - k, &tree[k..], out);
        out.push(root_of(&tree[..k]));
    }
}

/// RFC 9162 SUBPROOF(m, D[n], b); `0 < m <= tree.len()`.
fn subproof(m: usize, tree: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = tree.len();
    if m == n {
        if !complete {
            out.push(root_of(tree));
        }
        return;
    }
    if n < 2 {
        return; // unreachable for 0 < m < n
    }
    let k = split_point(n);
    if m <= k {
        subproof(m, &tree[..k], complete, out);
        out.push(root_of(&tree[k..]));
    } else {
        subproof(m - k, &tree[k..], false, out);
        out.push(root_of(&tree[..k]));
    }
}

#[cfg(test)]
mod tests;
