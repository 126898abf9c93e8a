#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use super::*;

// Reference vectors from transparency-dev/merkle (the successor of google/certificate-transparency-go's
// merkletree package): leaves and roots from `testonly/constants.go` (LeafInputs, RootHashes),
// proofs from `proof/verify_test.go` (inclusionProofs, consistencyProofs). Those files number
// leaves from 1; the indices below are converted to 0-based.
const LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Root for tree sizes 0..=8.
const ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (0-based index, size, proof)
const INCLUSION: &[(u64, u64, &[&str])] = &[
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (0, 1, &[]),
];

/// (old size, new size, proof)
const CONSISTENCY: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h(s: &str) -> Hash {
    unhex(s).try_into().unwrap()
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|s| h(s)).collect()
}

fn reference_leaves() -> Vec<Hash> {
    LEAVES.iter().map(|l| leaf_hash(&unhex(l))).collect()
}

fn synthetic_leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

#[test]
fn empty_root_is_sha256_of_nothing() {
    assert_eq!(empty_root(), h(ROOTS[0]));
    assert_eq!(root_of(&[]), h(ROOTS[0]));
    assert_eq!(Frontier::new().root(), h(ROOTS[0]));
}

#[test]
fn roots_match_reference_vectors_for_every_size() {
    let leaves = reference_leaves();
    let mut frontier = Frontier::new();
    for (size, root) in ROOTS.iter().enumerate() {
        assert_eq!(root_of(&leaves[..size]), h(root), "root_of size {size}");
        assert_eq!(frontier.root(), h(root), "frontier size {size}");
        assert_eq!(frontier.size(), size as u64);
        if let Some(leaf) = leaves.get(size) {
            frontier.push(*leaf);
        }
    }
}

#[test]
fn inclusion_proofs_match_reference_vectors() {
    let leaves = reference_leaves();
    for &(index, size, proof) in INCLUSION {
        let want = hashes(proof);
        let got = inclusion_proof(index, size, &leaves).unwrap();
        assert_eq!(got, want, "proof for {index} in {size}");
        let root = h(ROOTS[size as usize]);
        verify_inclusion(&leaves[index as usize], index, size, &want, &root).unwrap();
    }
}

#[test]
fn consistency_proofs_match_reference_vectors() {
    let leaves = reference_leaves();
    for &(old, new, proof) in CONSISTENCY {
        let want = hashes(proof);
        let got = consistency_proof(old, new, &leaves).unwrap();
        assert_eq!(got, want, "proof {old} -> {new}");
        let (old_root, new_root) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
        verify_consistency(old, new, &old_root, &new_root, &want).unwrap();
    }
}

#[test]
fn frontier_round_trips_through_its_parts() {
    let leaves = synthetic_leaves(37);
    let mut frontier = Frontier::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let copy = Frontier::from_parts(frontier.size(), frontier.nodes().to_vec()).unwrap();
        assert_eq!(copy, frontier);
        assert_eq!(frontier.root(), root_of(&leaves[..i]));
        frontier.push(*leaf);
    }
    assert_eq!(
        Frontier::from_parts(5, vec![[0; 32]]),
        Err(ProofError::InvalidFrontier {
            size: 5,
            expected: 2,
            got: 1
        })
    );
}

fn flip(hash: &Hash, bit: usize) -> Hash {
    let mut out = *hash;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

/// Every bit of a hash would be 256 flips; all 256 are equivalent to SHA-256, so each test
/// flips one bit in every byte, cycling through the bit positions (32 flips per hash).
fn hash_flips() -> impl Iterator<Item = usize> {
    (0..HASH_LEN).map(|byte| byte * 8 + byte % 8)
}

#[test]
fn every_inclusion_proof_up_to_64_verifies_and_any_single_bit_change_fails() {
    let leaves = synthetic_leaves(64);
    for size in 1..=64u64 {
        let root = root_of(&leaves[..size as usize]);
        for index in 0..size {
            let leaf = leaves[index as usize];
            let proof = inclusion_proof(index, size, &leaves).unwrap();
            verify_inclusion(&leaf, index, size, &proof, &root).unwrap();

            for bit in hash_flips() {
                assert!(verify_inclusion(&flip(&leaf, bit), index, size, &proof, &root).is_err());
                assert!(verify_inclusion(&leaf, index, size, &proof, &flip(&root, bit)).is_err());
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(verify_inclusion(&leaf, index, size, &bad, &root).is_err());
                }
            }
            for bit in 0..64 {
                let (i2, s2) = (index ^ (1 << bit), size ^ (1 << bit));
                assert!(
                    verify_inclusion(&leaf, i2, size, &proof, &root).is_err(),
                    "index {index}->{i2} size {size}"
                );
                // See `tree_size_is_bound_by_the_checkpoint_not_the_root`.
                if verify_inclusion(&leaf, index, s2, &proof, &root).is_ok() {
                    assert_eq!(s2.ilog2(), size.ilog2(), "index {index} size {size}->{s2}");
                }
            }
            // Wrong length: one hash more or less.
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(&leaf, index, size, &longer, &root).is_err());
            if !proof.is_empty() {
                let shorter = &proof[..proof.len() - 1];
                assert!(verify_inclusion(&leaf, index, size, shorter, &root).is_err());
            }
        }
    }
}

#[test]
fn every_consistency_proof_up_to_64_verifies_and_any_single_bit_change_fails() {
    let leaves = synthetic_leaves(64);
    let roots: Vec<Hash> = (0..=64).map(|n| root_of(&leaves[..n])).collect();
    for new in 0..=64u64 {
        for old in 0..=new {
            let (r1, r2) = (roots[old as usize], roots[new as usize]);
            let proof = consistency_proof(old, new, &leaves).unwrap();
            verify_consistency(old, new, &r1, &r2, &proof).unwrap();

            for bit in hash_flips() {
                // With equal sizes a changed new root is caught; with old size 0 the new root
                // is not constrained by anything (every tree extends the empty one).
                if old > 0 {
                    assert!(verify_consistency(old, new, &flip(&r1, bit), &r2, &proof).is_err());
                    assert!(verify_consistency(old, new, &r1, &flip(&r2, bit), &proof).is_err());
                } else {
                    assert!(verify_consistency(old, new, &flip(&r1, bit), &r2, &proof).is_err());
                }
                for i in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[i] = flip(&bad[i], bit);
                    assert!(verify_consistency(old, new, &r1, &r2, &bad).is_err());
                }
            }
            if old == 0 || old == new {
                continue; // sizes are not bound by a hash when the proof is trivially empty
            }
            for bit in 0..64 {
                let (o2, n2) = (old ^ (1 << bit), new ^ (1 << bit));
                assert!(
                    verify_consistency(o2, new, &r1, &r2, &proof).is_err(),
                    "old {old}->{o2} new {new}"
                );
                // See `tree_size_is_bound_by_the_checkpoint_not_the_root`.
                if verify_consistency(old, n2, &r1, &r2, &proof).is_ok() {
                    assert_eq!(n2.ilog2(), new.ilog2(), "old {old} new {new}->{n2}");
                }
            }
            let mut longer = proof.clone();
            longer.push(r1);
            assert!(verify_consistency(old, new, &r1, &r2, &longer).is_err());
            assert!(verify_consistency(old, new, &r1, &r2, &proof[..proof.len() - 1]).is_err());
        }
    }
}

/// RFC 6962 roots do not commit to the tree size: a proof only fixes the shape of the path, and
/// sizes with the same shape (here 5 and 7 for leaf 0: three right siblings) accept the same
/// proof. The exhaustive tests above show that every single-bit change to the index or old size
/// fails and a changed tree size passes only within the same power of two. lanyard never takes a
/// size on its own: size and root come together from a signed checkpoint, and changing either
/// breaks its signature (`checkpoint::tests::altered_body_fails`).
#[test]
fn tree_size_is_bound_by_the_checkpoint_not_the_root() {
    let leaves = synthetic_leaves(5);
    let root = root_of(&leaves);
    let proof = inclusion_proof(0, 5, &leaves).unwrap();
    verify_inclusion(&leaves[0], 0, 5, &proof, &root).unwrap();
    verify_inclusion(&leaves[0], 0, 7, &proof, &root).unwrap();
    assert!(verify_inclusion(&leaves[0], 0, 4, &proof, &root).is_err());
    assert!(verify_inclusion(&leaves[0], 0, 13, &proof, &root).is_err());
}

#[test]
fn hostile_inputs_are_errors_not_panics() {
    let leaves = synthetic_leaves(8);
    let root = root_of(&leaves);
    let junk = vec![root; 70];
    for &(index, size) in &[
        (0, 0),
        (1, 0),
        (8, 8),
        (u64::MAX, u64::MAX),
        (0, u64::MAX),
        (u64::MAX - 1, u64::MAX),
    ] {
        for len in [0, 1, 3, 64, 70] {
            let _ = verify_inclusion(&leaves[0], index, size, &junk[..len], &root);
        }
        assert!(inclusion_proof(index, size, &leaves).is_err());
    }
    assert_eq!(
        verify_inclusion(&leaves[0], 0, 0, &[], &empty_root()),
        Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
    );
    for &(old, new) in &[
        (0, 0),
        (9, 8),
        (u64::MAX, u64::MAX),
        (1, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (3, 1 << 63),
    ] {
        for len in [0, 1, 3, 64, 70] {
            let _ = verify_consistency(old, new, &root, &root, &junk[..len]);
        }
    }
    assert_eq!(
        consistency_proof(9, 8, &leaves),
        Err(ProofError::SizesReversed {
            old_size: 9,
            new_size: 8
        })
    );
    assert!(consistency_proof(3, 9, &leaves).is_err());
    assert!(matches!(
        consistency_proof(5, 4, &leaves),
        Err(ProofError::SizesReversed { .. })
    ));
    // Size 0 against size 0: the empty proof and the empty root.
    verify_consistency(0, 0, &empty_root(), &empty_root(), &[]).unwrap();
    assert!(verify_consistency(0, 0, &root, &root, &[]).is_err());
    assert!(verify_consistency(0, 5, &empty_root(), &root, &[root]).is_err());
}
