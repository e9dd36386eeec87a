//! RFC 9162 §2.1 Merkle tree hashing, inclusion and consistency proofs, and the linear chain of
//! audit.md. Pure functions: the ledger's stored subtree hashes come in through [`Nodes`].
//!
//! Leaf index `i` is log position `i + 1`. A perfect subtree is named by its level (height:
//! 0 for a leaf) and its index at that level; it covers leaves `[index·2^level,
//! (index+1)·2^level)`. Every hash a proof needs is the hash of such aligned perfect subtrees,
//! which the chainer stores as they complete.

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `chain_hash(0)`: 32 zero bytes.
pub const CHAIN_START: Hash = [0; 32];

/// SHA-256(0x00 ‖ data): the RFC 9162 leaf hash.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// SHA-256(0x01 ‖ left ‖ right): an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `chain_hash(p) = SHA-256(chain_hash(p−1) ‖ leaf_hash(p))`.
pub fn chain_next(previous: &Hash, leaf: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(leaf);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2): RFC 9162's split point.
pub fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees (level, index) that make up the first `size` leaves, left to right:
/// one per set bit of `size`, largest first.
pub fn decomposition(size: u64) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64).rev() {
        if size & (1 << level) != 0 {
            out.push((level, start >> level));
            start += 1 << level;
        }
    }
    out
}

/// The right edge of the tree of the first `size` leaves: the roots of its decomposition.
/// Enough to append leaves and to compute the root, in memory bounded by 64 hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees of [`decomposition`], largest first.
    nodes: Vec<Hash>,
}

impl Default for Frontier {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontier {
    pub fn new() -> Self {
        Self {
            size: 0,
            nodes: Vec::new(),
        }
    }

    /// A frontier from the roots of `decomposition(size)`, largest first.
    pub fn from_nodes(size: u64, nodes: Vec<Hash>) -> Option<Self> {
        (nodes.len() == size.count_ones() as usize).then_some(Self { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf; `completed` receives the hashes of the perfect subtrees of level 1 and
    /// up that this leaf completes, lowest level first (the chainer stores them with the leaf).
    pub fn push(&mut self, leaf: Hash, completed: &mut Vec<Hash>) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            let left = self.nodes.pop().expect("one node per set bit");
            h = node_hash(&left, &h);
            completed.push(h);
            s >>= 1;
        }
        self.nodes.push(h);
        self.size += 1;
    }

    /// `root(size)`: the subtrees folded from the right (RFC 9162's MTH).
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// Where proofs get perfect-subtree hashes from.
pub trait Nodes {
    fn perfect(&mut self, level: u32, index: u64) -> Hash;
}

/// Records which perfect subtrees a computation asks for (the proof algorithms do not branch
/// on hash values, so a dry run names exactly what to fetch).
#[derive(Default)]
pub struct Wanted(pub Vec<(u32, u64)>);

impl Nodes for Wanted {
    fn perfect(&mut self, level: u32, index: u64) -> Hash {
        self.0.push((level, index));
        [0; 32]
    }
}

impl<S: std::hash::BuildHasher> Nodes for std::collections::HashMap<(u32, u64), Hash, S> {
    fn perfect(&mut self, level: u32, index: u64) -> Hash {
        // A missing node is a bug in the caller's prefetch, not bad input.
        *self.get(&(level, index)).expect("prefetched subtree")
    }
}

/// MTH(D[lo:hi]) for a range whose start is aligned to a power of two ≥ its length (every
/// range RFC 9162's recursions visit is).
fn mth(src: &mut impl Nodes, lo: u64, hi: u64) -> Hash {
    let n = hi - lo;
    if n.is_power_of_two() {
        let level = n.trailing_zeros();
        return src.perfect(level, lo >> level);
    }
    let k = split(n);
    let left = src.perfect(k.trailing_zeros(), lo >> k.trailing_zeros());
    let right = mth(src, lo + k, hi);
    node_hash(&left, &right)
}

/// `root(size)` from stored subtrees.
pub fn root(src: &mut impl Nodes, size: u64) -> Hash {
    if size == 0 {
        empty_root()
    } else {
        mth(src, 0, size)
    }
}

/// RFC 9162 §2.1.3.1 PATH(m, D[n]): the inclusion proof of leaf index `m` in the tree of size
/// `n` (requires m < n), leaf side first.
pub fn inclusion_path(src: &mut impl Nodes, m: u64, n: u64) -> Vec<Hash> {
    assert!(m < n, "leaf index {m} outside a tree of size {n}");
    let mut out = Vec::new();
    path(src, m, 0, n, &mut out);
    out
}

fn path(src: &mut impl Nodes, m: u64, lo: u64, hi: u64, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(src, m, lo, lo + k, out);
        out.push(mth(src, lo + k, hi));
    } else {
        path(src, m - k, lo + k, hi, out);
        out.push(mth(src, lo, lo + k));
    }
}

/// RFC 9162 §2.1.4.1 PROOF(m, D[n]): the consistency proof from size `m` to size `n`
/// (requires m ≤ n; empty when m = n or m = 0).
pub fn consistency_path(src: &mut impl Nodes, m: u64, n: u64) -> Vec<Hash> {
    assert!(m <= n, "consistency from {m} to a smaller {n}");
    let mut out = Vec::new();
    if m > 0 && m < n {
        subproof(src, m, 0, n, true, &mut out);
    }
    out
}

fn subproof(src: &mut impl Nodes, m: u64, lo: u64, hi: u64, complete: bool, out: &mut Vec<Hash>) {
    let n = hi - lo;
    if m == n {
        if !complete {
            out.push(mth(src, lo, hi));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, lo, lo + k, complete, out);
        out.push(mth(src, lo + k, hi));
    } else {
        subproof(src, m - k, lo + k, hi, false, out);
        out.push(mth(src, lo, lo + k));
    }
}

/// RFC 9162 §2.1.3.2: does `path` prove leaf `leaf` at index `index` in the tree of `size`
/// with root `root`? The whole path must be used up exactly at the root.
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// RFC 9162 §2.1.4.2: does `path` prove the tree of size `first` with root `first_root` is a
/// prefix of the tree of size `second` with root `second_root`?
pub fn verify_consistency(first: u64, second: u64, first_root: &Hash, second_root: &Hash, path: &[Hash]) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return path.is_empty() && first_root == second_root;
    }
    if first == 0 {
        // Every tree extends the empty one; there is nothing to prove.
        return path.is_empty();
    }
    if path.is_empty() {
        return false;
    }
    let mut nodes: Vec<&Hash> = Vec::with_capacity(path.len() + 1);
    if first.is_power_of_two() {
        nodes.push(first_root);
    }
    nodes.extend(path.iter());
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*nodes[0], *nodes[0]);
    for c in &nodes[1..] {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *first_root && sr == *second_root && s == 0
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// The RFC 6962 / transparency-dev reference leaves (testonly/constants.go).
    fn reference_leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|d| leaf_hash(&hex::decode(d).unwrap()))
        .collect()
    }

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

    /// Every perfect subtree of a tree of `leaves`, as the chainer stores them.
    fn store(leaves: &[Hash]) -> HashMap<(u32, u64), Hash> {
        let mut nodes = HashMap::new();
        let mut f = Frontier::new();
        for (i, leaf) in leaves.iter().enumerate() {
            nodes.insert((0, i as u64), *leaf);
            let mut done = Vec::new();
            f.push(*leaf, &mut done);
            for (l, hash) in done.into_iter().enumerate() {
                let level = l as u32 + 1;
                nodes.insert((level, (i as u64 + 1) / (1 << level) - 1), hash);
            }
        }
        nodes
    }

    /// RFC 9162's MTH, written down directly from §2.1.1 (the oracle).
    fn mth_reference(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split(n as u64) as usize;
                node_hash(&mth_reference(&leaves[..k]), &mth_reference(&leaves[k..]))
            }
        }
    }

    #[test]
    fn reference_roots() {
        let leaves = reference_leaves();
        let mut nodes = store(&leaves);
        let mut f = Frontier::new();
        assert_eq!(hex::encode(f.root()), ROOTS[0]);
        for n in 1..=8 {
            f.push(leaves[n - 1], &mut Vec::new());
            assert_eq!(hex::encode(f.root()), ROOTS[n], "frontier root({n})");
            assert_eq!(hex::encode(root(&mut nodes, n as u64)), ROOTS[n], "stored root({n})");
            assert_eq!(hex::encode(mth_reference(&leaves[..n])), ROOTS[n]);
        }
    }

    #[test]
    fn reference_inclusion_proofs() {
        let leaves = reference_leaves();
        let mut nodes = store(&leaves);
        let cases: [(u64, u64, &[&str]); 5] = [
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
        for (m, n, want) in cases {
            let got: Vec<String> = inclusion_path(&mut nodes, m, n).iter().map(hex::encode).collect();
            assert_eq!(got, want, "inclusion({m}, {n})");
            let path: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert!(verify_inclusion(
                m,
                n,
                &leaves[m as usize],
                &path,
                &h(ROOTS[n as usize])
            ));
        }
    }

    #[test]
    fn reference_consistency_proofs() {
        let leaves = reference_leaves();
        let mut nodes = store(&leaves);
        let cases: [(u64, u64, &[&str]); 5] = [
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
                2,
                8,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
        ];
        for (m, n, want) in cases {
            let got: Vec<String> = consistency_path(&mut nodes, m, n).iter().map(hex::encode).collect();
            assert_eq!(got, want, "consistency({m}, {n})");
            let path: Vec<Hash> = want.iter().map(|s| h(s)).collect();
            assert!(verify_consistency(
                m,
                n,
                &h(ROOTS[m as usize]),
                &h(ROOTS[n as usize]),
                &path
            ));
        }
    }

    fn synthetic(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(format!("entry {i}").as_bytes())).collect()
    }

    /// Every way of spoiling a proof (engineering-notes: bit flips, truncation, extension,
    /// wrong sizes, the 1→2 case).
    fn inclusion_mutants(m: u64, n: u64, path: &[Hash]) -> Vec<(u64, u64, Vec<Hash>, &'static str)> {
        let mut out = vec![
            // (A size with the same shape along this path proves nothing different: the root
            // it is checked against decides; transparency-dev's probes double and halve it.)
            (m, n * 2, path.to_vec(), "size * 2"),
            (m, n / 2, path.to_vec(), "size / 2"),
            (m ^ 1, n, path.to_vec(), "index ^ 1"),
            (m + 1, n, path.to_vec(), "index + 1"),
            (m, n, [path, &[[7; 32]]].concat(), "extended"),
            (m, n, [&[[7; 32]][..], path].concat(), "garbage in front"),
        ];
        if !path.is_empty() {
            out.push((m, n, path[..path.len() - 1].to_vec(), "truncated"));
        }
        for i in 0..path.len() {
            for bit in [0u8, 7] {
                let mut p = path.to_vec();
                p[i][31 - bit as usize % 32] ^= 1 << bit;
                out.push((m, n, p, "bit flip"));
            }
        }
        out
    }

    #[test]
    fn every_inclusion_proof_verifies_and_no_mutant_does() {
        let leaves = synthetic(70);
        let mut nodes = store(&leaves);
        for n in 1..=70u64 {
            let r = root(&mut nodes, n);
            assert_eq!(r, mth_reference(&leaves[..n as usize]), "root({n})");
            for m in 0..n {
                let p = inclusion_path(&mut nodes, m, n);
                assert!(verify_inclusion(m, n, &leaves[m as usize], &p, &r), "({m}, {n})");
                for (mi, ni, bad, what) in inclusion_mutants(m, n, &p) {
                    let leaf = leaves.get(mi as usize).copied().unwrap_or([9; 32]);
                    assert!(
                        !verify_inclusion(mi, ni, &leaf, &bad, &r),
                        "{what} accepted for ({m}, {n})"
                    );
                }
                assert!(!verify_inclusion(m, n, &[0; 32], &p, &r), "wrong leaf accepted");
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_no_mutant_does() {
        let leaves = synthetic(40);
        let mut nodes = store(&leaves);
        let roots: Vec<Hash> = (0..=40).map(|n| root(&mut nodes, n)).collect();
        for n in 1..=40u64 {
            for m in 1..=n {
                let p = consistency_path(&mut nodes, m, n);
                let (rm, rn) = (&roots[m as usize], &roots[n as usize]);
                assert!(verify_consistency(m, n, rm, rn, &p), "({m}, {n})");
                if m == n {
                    assert!(p.is_empty());
                    assert!(!verify_consistency(m, n, rm, rn, &[[0; 32]]));
                    continue;
                }
                let mut mutants: Vec<(u64, u64, Vec<Hash>)> = vec![
                    (m, n, Vec::new()),
                    (m, n, [&p[..], &[*rn]].concat()),
                    (m, n, [&[*rm][..], &p[..]].concat()),
                    (m, n, p[..p.len() - 1].to_vec()),
                    (m + 1, n, p.clone()),
                    (m - 1, n, p.clone()),
                    (m, n + 1, p.clone()),
                    (m, n - 1, p.clone()),
                ];
                for i in 0..p.len() {
                    let mut q = p.clone();
                    q[i][0] ^= 0x10;
                    mutants.push((m, n, q));
                }
                for (mi, ni, q) in mutants {
                    if mi == 0 || mi > 40 || ni > 40 || (mi, ni, &q) == (m, n, &p) {
                        continue;
                    }
                    assert!(
                        !verify_consistency(mi, ni, &roots[mi as usize], &roots[ni as usize], &q),
                        "mutant ({mi}, {ni}, {} nodes) of ({m}, {n}) accepted",
                        q.len()
                    );
                }
                assert!(!verify_consistency(m, n, rn, rm, &p) || rm == rn, "swapped roots");
            }
        }
        // The known verifier bug: sizes 1 → 2.
        let p = consistency_path(&mut nodes, 1, 2);
        assert_eq!(p, vec![leaves[1]]);
        assert!(verify_consistency(1, 2, &roots[1], &roots[2], &p));
        assert!(!verify_consistency(1, 2, &roots[1], &roots[2], &[]));
        assert!(!verify_consistency(1, 2, &leaves[1], &roots[2], &[leaves[0]]));
    }

    #[test]
    fn decomposition_and_subtree_addressing() {
        assert_eq!(decomposition(0), vec![]);
        assert_eq!(decomposition(1), vec![(0, 0)]);
        assert_eq!(decomposition(6), vec![(2, 0), (1, 2)]);
        assert_eq!(decomposition(7), vec![(2, 0), (1, 2), (0, 6)]);
        assert_eq!(
            (split(2), split(3), split(4), split(5), split(8), split(9)),
            (1, 2, 2, 4, 4, 8)
        );
    }
}
