//! ext2/3/4: the block bitmap of every block group.
//!
//! Layout from the kernel's `Documentation/filesystems/ext4/`. Groups
//! flagged `BLOCK_UNINIT` (uninit_bg / metadata_csum) have no bitmap on
//! disk; their used blocks are the group's superblock backup and
//! descriptor blocks plus any group's bitmaps and inode table placed in it
//! (flex_bg), as the kernel computes them.

use std::ops::Range;

use reliquary_image::{FileSystemKind, ReadAt};

use super::{FreeRuns, FreeSpace, FsError, PartitionBytes};

const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xef53;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
/// Incompatible features that leave the block bitmaps' meaning alone:
/// filetype, extents, 64bit, mmp, flex_bg, ea_inode, dirdata, csum_seed,
/// largedir, inline_data, encrypt, casefold.
const INCOMPAT_UNDERSTOOD: u32 = 0x2
    | 0x40
    | 0x80
    | 0x100
    | 0x200
    | 0x400
    | 0x1000
    | 0x2000
    | 0x4000
    | 0x8000
    | 0x1_0000
    | 0x2_0000;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const STATE_VALID: u16 = 0x1;
const STATE_ERROR: u16 = 0x2;
const BG_INODE_UNINIT: u16 = 0x1;
const BG_BLOCK_UNINIT: u16 = 0x2;
const INODE_EXTENTS_FL: u32 = 0x8_0000;
const INODE_INLINE_DATA_FL: u32 = 0x1000_0000;
const EXTENT_MAGIC: u16 = 0xf30a;
/// The deepest extent tree the kernel builds.
const MAX_EXTENT_DEPTH: u16 = 5;

/// The largest map of used blocks held for the inode cross-check: 2^29
/// blocks, a 2 TiB volume of 4 KiB blocks. A bigger one is kept whole.
const MAX_BLOCK_MAP_BYTES: u64 = 64 << 20;
/// Inode tables are read this many bytes at a time.
const INODE_PIECE: usize = 1 << 20;

/// The most block groups read: a 64 TiB file system of 4 KiB blocks.
const MAX_GROUPS: u64 = 1 << 19;

/// Whether `head` (the partition's first 2 KiB) holds an ext superblock.
pub(super) fn is_ext(head: &[u8]) -> bool {
    head.len() >= 2048 && le_u16(head, SUPERBLOCK_OFFSET as usize + 56) == MAGIC
}

/// ext4 if it uses any ext4-only feature, ext3 if it has a journal.
pub(super) fn kind_of(superblock: &[u8]) -> FileSystemKind {
    let compat = le_u32(superblock, 92);
    let incompat = le_u32(superblock, 96);
    let ro_compat = le_u32(superblock, 100);
    if incompat & (INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG) != 0
        || ro_compat & (RO_COMPAT_HUGE_FILE | RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0
    {
        FileSystemKind::Ext4
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        FileSystemKind::Ext3
    } else {
        FileSystemKind::Ext2
    }
}

struct Superblock {
    blocks_count: u64,
    first_data_block: u64,
    block_size: u64,
    blocks_per_group: u64,
    inodes_per_group: u64,
    inode_size: u64,
    desc_size: u64,
    reserved_gdt_blocks: u64,
    sparse_super: bool,
    uninit_possible: bool,
    kind: FileSystemKind,
    uuid: [u8; 16],
    is_64bit: bool,
    free_blocks: u64,
    free_inodes: u64,
}

struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
    free_blocks: u64,
    free_inodes: u64,
    /// Inodes at the end of the table never used (with uninit_bg or
    /// metadata_csum).
    itable_unused: u64,
}

pub(super) fn free_space<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    mut free: FreeRuns,
) -> Result<FreeSpace, FsError> {
    let mut raw = vec![0u8; 1024];
    bytes.read(&mut raw, SUPERBLOCK_OFFSET)?;
    let sb = parse_superblock(&raw, bytes.len())?;
    let groups = (sb.blocks_count - sb.first_data_block).div_ceil(sb.blocks_per_group);
    if groups > MAX_GROUPS {
        return Err(FsError::Unsupported(format!("{groups} block groups")));
    }
    let descriptors = read_descriptors(bytes, &sb, groups)?;
    check_descriptors(&sb, &descriptors)?;
    let uninit_used = if sb.uninit_possible {
        metadata_blocks(&sb, &descriptors)
    } else {
        Vec::new()
    };

    let descriptor_free_inodes: u64 = descriptors.iter().map(|g| g.free_inodes).sum();
    if descriptor_free_inodes != sb.free_inodes {
        return Err(FsError::MapContradicted(format!(
            "the group descriptors hold {descriptor_free_inodes} free inodes, the superblock says {}",
            sb.free_inodes
        )));
    }
    let map_bytes = sb.blocks_count.div_ceil(8);
    if map_bytes > MAX_BLOCK_MAP_BYTES {
        return Err(FsError::Unsupported(format!(
            "{} blocks: their map of {map_bytes} bytes is more than the {MAX_BLOCK_MAP_BYTES} \
             the inode cross-check may hold",
            sb.blocks_count
        )));
    }
    // Every block used until a bitmap (or the metadata of a group without
    // one) says it is free.
    let mut used = vec![0xffu8; map_bytes as usize];
    let mut mark_free = |range: Range<u64>| {
        for b in range {
            used[(b / 8) as usize] &= !(1 << (b % 8));
        }
    };
    let mut bitmap_free = 0u64;
    let mut bitmap = vec![0u8; sb.block_size as usize];
    for (g, group) in descriptors.iter().enumerate() {
        let first = sb.first_data_block + g as u64 * sb.blocks_per_group;
        let count = sb.blocks_per_group.min(sb.blocks_count - first);
        if sb.uninit_possible && group.flags & BG_BLOCK_UNINIT != 0 {
            // No bitmap on disk: every block not holding metadata is free.
            let mut at = first;
            let group_end = first + count;
            let from = uninit_used.partition_point(|r| r.end <= first);
            let used = uninit_used[from..]
                .iter()
                .take_while(|r| r.start < group_end);
            let mut free_in_group = 0;
            for r in used {
                if r.start.max(first) > at {
                    free.push(at * sb.block_size..r.start.max(first) * sb.block_size);
                    free_in_group += r.start.max(first) - at;
                    mark_free(at..r.start.max(first));
                }
                at = at.max(r.end.min(group_end));
            }
            free_in_group += group_end.saturating_sub(at);
            if group_end > at {
                free.push(at * sb.block_size..group_end * sb.block_size);
                mark_free(at..group_end);
            }
            if free_in_group != group.free_blocks {
                return Err(FsError::MapContradicted(format!(
                    "group {g} has no bitmap and {free_in_group} blocks free besides its \
                     metadata, its descriptor says {}",
                    group.free_blocks
                )));
            }
            bitmap_free += free_in_group;
            continue;
        }
        bytes.read(&mut bitmap, group.block_bitmap * sb.block_size)?;
        let mut zero_bits = 0u64;
        let mut run_start = None;
        for i in 0..count {
            let used = bitmap[(i / 8) as usize] & (1 << (i % 8)) != 0;
            match (used, run_start) {
                (false, None) => run_start = Some(first + i),
                (true, Some(start)) => {
                    free.push(start * sb.block_size..(first + i) * sb.block_size);
                    run_start = None;
                }
                _ => {}
            }
            zero_bits += u64::from(!used);
            if !used {
                mark_free(first + i..first + i + 1);
            }
        }
        if let Some(start) = run_start {
            free.push(start * sb.block_size..(first + count) * sb.block_size);
        }
        if zero_bits != group.free_blocks {
            return Err(FsError::MapContradicted(format!(
                "group {g}'s bitmap has {zero_bits} free blocks, its descriptor says {}",
                group.free_blocks
            )));
        }
        bitmap_free += zero_bits;
    }
    if bitmap_free != sb.free_blocks {
        return Err(FsError::MapContradicted(format!(
            "the block bitmaps hold {bitmap_free} free blocks, the superblock says {}",
            sb.free_blocks
        )));
    }
    let (inodes, referenced) = walk_inodes(bytes, &sb, &descriptors, &used)?;
    let proof = vec![
        "the journal needs no recovery and the superblock says clean".to_string(),
        format!(
            "the extents and block maps of {inodes} inodes in use ({referenced} blocks, \
             with their tree and indirect blocks and extended-attribute blocks) all lie in \
             blocks the bitmaps mark used"
        ),
        format!(
            "{bitmap_free} free blocks in the superblock, the sum over the {} groups' \
             descriptors and the bitmaps alike; {} free inodes in the superblock, the \
             descriptors and the inode bitmaps alike",
            descriptors.len(),
            sb.free_inodes
        ),
    ];
    Ok(FreeSpace {
        kind: sb.kind,
        volume_serial: Some(uuid_text(&sb.uuid)),
        free: free.into_runs(),
        proof,
    })
}

/// Walks every inode in use (by the inode bitmaps, up to each table's
/// never-used tail) and checks that every block its extent tree or block
/// map references, tree and indirect blocks included, and its
/// extended-attribute block, is marked used in `used`. Returns the inodes
/// walked and the blocks they reference. Time is bounded: the references
/// counted may not exceed the volume's blocks (ext4 shares no data
/// blocks), and tree depth is bounded.
fn walk_inodes<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    sb: &Superblock,
    groups: &[Group],
    used: &[u8],
) -> Result<(u64, u64), FsError> {
    let mut walker = InodeWalker {
        bytes,
        sb,
        used,
        referenced: 0,
        inode: 0,
    };
    let inode_size = sb.inode_size as usize;
    let per_piece = (INODE_PIECE / inode_size).max(1);
    let mut piece = vec![0u8; per_piece * inode_size];
    let mut inode_bitmap = vec![0u8; sb.block_size as usize];
    let mut walked = 0u64;
    for (g, group) in groups.iter().enumerate() {
        if sb.uninit_possible && group.flags & BG_INODE_UNINIT != 0 {
            continue;
        }
        let in_table = if sb.uninit_possible {
            sb.inodes_per_group.saturating_sub(group.itable_unused)
        } else {
            sb.inodes_per_group
        };
        let in_table = in_table.min(sb.block_size * 8);
        bytes.read(&mut inode_bitmap, group.inode_bitmap * sb.block_size)?;
        let free_bits = free_inode_bits(&inode_bitmap, sb.inodes_per_group);
        if free_bits != group.free_inodes {
            return Err(FsError::MapContradicted(format!(
                "group {g}'s inode bitmap has {free_bits} free inodes, its descriptor says {}",
                group.free_inodes
            )));
        }
        let mut index = 0u64;
        while index < in_table {
            let count = (in_table - index).min(per_piece as u64);
            let piece = &mut piece[..count as usize * inode_size];
            bytes.read(
                piece,
                group.inode_table * sb.block_size + index * sb.inode_size,
            )?;
            for (i, raw) in piece.chunks_exact(inode_size).enumerate() {
                let n = index + i as u64;
                if inode_bitmap[(n / 8) as usize] & (1 << (n % 8)) == 0 {
                    continue;
                }
                walker.inode = g as u64 * sb.inodes_per_group + n + 1;
                if walker.walk_inode(raw)? {
                    walked += 1;
                }
            }
            index += count;
        }
    }
    Ok((walked, walker.referenced))
}

/// The clear bits among a group's first `inodes_per_group` bits of its
/// inode bitmap (the rest of the block is padding, set by mke2fs).
fn free_inode_bits(inode_bitmap: &[u8], inodes_per_group: u64) -> u64 {
    let bits = inodes_per_group.min(inode_bitmap.len() as u64 * 8);
    let whole = (bits / 8) as usize;
    let mut used: u64 = inode_bitmap[..whole]
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    if bits % 8 != 0 {
        let tail = inode_bitmap[whole] & ((1u8 << (bits % 8)) - 1);
        used += u64::from(tail.count_ones());
    }
    bits - used
}

struct InodeWalker<'a, 'b, S: ReadAt + ?Sized> {
    bytes: &'a PartitionBytes<'b, S>,
    sb: &'a Superblock,
    used: &'a [u8],
    referenced: u64,
    /// The inode being walked, for messages.
    inode: u64,
}

impl<S: ReadAt + ?Sized> InodeWalker<'_, '_, S> {
    /// Checks one inode; false for one that holds no blocks to check.
    fn walk_inode(&mut self, raw: &[u8]) -> Result<bool, FsError> {
        let mode = le_u16(raw, 0);
        if mode == 0 {
            return Ok(false);
        }
        let flags = le_u32(raw, 0x20);
        let acl = u64::from(le_u32(raw, 0x68))
            | if self.sb.is_64bit {
                u64::from(le_u16(raw, 0x76)) << 32
            } else {
                0
            };
        if acl != 0 {
            self.check(acl, 1, "its extended-attribute block")?;
        }
        let kind = mode & 0xf000;
        let fast_symlink = kind == 0xa000 && flags & INODE_EXTENTS_FL == 0 && le_u32(raw, 4) < 60;
        // Devices, FIFOs and sockets keep no blocks; fast symlinks and
        // inline data keep theirs in the inode.
        if !matches!(kind, 0x8000 | 0x4000 | 0xa000)
            || fast_symlink
            || flags & INODE_INLINE_DATA_FL != 0
        {
            return Ok(true);
        }
        let i_block = &raw[0x28..0x28 + 60];
        if flags & INODE_EXTENTS_FL != 0 {
            self.extent_node(i_block, MAX_EXTENT_DEPTH + 1)?;
        } else {
            for (slot, level) in [(12, 1), (13, 2), (14, 3)] {
                let block = u64::from(le_u32(i_block, slot * 4));
                self.mapped(block, level)?;
            }
            for slot in 0..12 {
                self.mapped(u64::from(le_u32(i_block, slot * 4)), 0)?;
            }
        }
        Ok(true)
    }

    /// One extent tree node (the inode's or a tree block), whose depth may
    /// be below `limit`.
    fn extent_node(&mut self, node: &[u8], limit: u16) -> Result<(), FsError> {
        let corrupt = |what: &str| {
            Err(FsError::Corrupt(format!(
                "inode {}'s extent tree {what}",
                self.inode
            )))
        };
        if le_u16(node, 0) != EXTENT_MAGIC {
            return corrupt("has no extent header");
        }
        let entries = usize::from(le_u16(node, 2));
        let depth = le_u16(node, 6);
        if depth >= limit {
            return corrupt("is deeper than its parent allows");
        }
        if 12 * (entries + 1) > node.len() {
            return corrupt("holds more entries than fit its node");
        }
        for e in 0..entries {
            let at = 12 * (e + 1);
            if depth == 0 {
                let len = u64::from(le_u16(node, at + 4));
                // Above 32,768: an unwritten extent, allocated all the same.
                let len = if len > 32_768 { len - 32_768 } else { len };
                let start = u64::from(le_u32(node, at + 8)) | u64::from(le_u16(node, at + 6)) << 32;
                self.check(start, len, "an extent")?;
            } else {
                let child = u64::from(le_u32(node, at + 4)) | u64::from(le_u16(node, at + 8)) << 32;
                self.check(child, 1, "an extent tree block")?;
                let mut block = vec![0u8; self.sb.block_size as usize];
                self.bytes.read(&mut block, child * self.sb.block_size)?;
                self.extent_node(&block, depth)?;
            }
        }
        Ok(())
    }

    /// A block map pointer: a data block at `level` 0, else an indirect
    /// block of that many levels. Zero is a hole.
    fn mapped(&mut self, block: u64, level: u32) -> Result<(), FsError> {
        if block == 0 {
            return Ok(());
        }
        if level == 0 {
            return self.check(block, 1, "a data block");
        }
        self.check(block, 1, "an indirect block")?;
        let mut table = vec![0u8; self.sb.block_size as usize];
        self.bytes.read(&mut table, block * self.sb.block_size)?;
        for entry in table.chunks_exact(4) {
            self.mapped(u64::from(le_u32(entry, 0)), level - 1)?;
        }
        Ok(())
    }

    /// Blocks `start..start + len`, referenced as `what`, must lie in the
    /// volume and be marked used.
    fn check(&mut self, start: u64, len: u64, what: &str) -> Result<(), FsError> {
        let inode = self.inode;
        let end = match start.checked_add(len) {
            Some(end) if end <= self.sb.blocks_count => end,
            _ => {
                return Err(FsError::Corrupt(format!(
                    "inode {inode}: {what} at block {start} lies beyond the volume"
                )))
            }
        };
        self.referenced += len;
        if self.referenced > self.sb.blocks_count {
            return Err(FsError::MapContradicted(format!(
                "the inodes reference more blocks than the volume's {} (inode {inode} \
                 shares blocks with another)",
                self.sb.blocks_count
            )));
        }
        if let Some(free) =
            (start..end).find(|&b| self.used[(b / 8) as usize] & (1 << (b % 8)) == 0)
        {
            return Err(FsError::MapContradicted(format!(
                "inode {inode}: {what} holds block {free}, which the block bitmap marks free"
            )));
        }
        Ok(())
    }
}

/// Walks every 256 bytes of arbitrary data as an inode of a volume of
/// 1 KiB blocks made of the same data, every block used (for the
/// `ext_inodes` fuzz target): extent trees and block maps are followed
/// into the data as deep as they lead, within one budget of references
/// for all inodes, as in a capture.
pub(super) fn fuzz_inodes(data: &[u8]) {
    let blocks_count = data.len() as u64 / 1024;
    let bytes = PartitionBytes {
        disk: &data.to_vec(),
        start: 0,
        len: data.len() as u64,
    };
    let sb = Superblock {
        blocks_count,
        first_data_block: 1,
        block_size: 1024,
        blocks_per_group: 8192,
        inodes_per_group: 2048,
        inode_size: 256,
        desc_size: 64,
        reserved_gdt_blocks: 0,
        sparse_super: true,
        uninit_possible: true,
        kind: FileSystemKind::Ext4,
        uuid: [0; 16],
        is_64bit: true,
        free_blocks: 0,
        free_inodes: 0,
    };
    let used = vec![0xffu8; blocks_count.div_ceil(8) as usize];
    let mut walker = InodeWalker {
        bytes: &bytes,
        sb: &sb,
        used: &used,
        referenced: 0,
        inode: 0,
    };
    for (n, raw) in data.chunks_exact(256).enumerate() {
        walker.inode = n as u64 + 1;
        let _ = walker.walk_inode(raw);
    }
}

fn parse_superblock(raw: &[u8], partition_len: u64) -> Result<Superblock, FsError> {
    let corrupt = |what: &str| Err(FsError::Corrupt(format!("the superblock's {what}")));
    if le_u16(raw, 56) != MAGIC {
        return corrupt("magic is wrong");
    }
    let state = le_u16(raw, 58);
    if state & STATE_ERROR != 0 {
        return Err(FsError::NotClean("ext errors are recorded"));
    }
    if state & STATE_VALID == 0 {
        return Err(FsError::NotClean("ext state is not clean"));
    }
    let incompat = le_u32(raw, 96);
    let ro_compat = le_u32(raw, 100);
    if incompat & INCOMPAT_RECOVER != 0 {
        return Err(FsError::NotClean("the ext journal needs recovery"));
    }
    if incompat & !INCOMPAT_UNDERSTOOD != 0 {
        return Err(FsError::Unsupported(format!(
            "ext incompatible features {:#x}",
            incompat & !INCOMPAT_UNDERSTOOD
        )));
    }
    if ro_compat & RO_COMPAT_BIGALLOC != 0 {
        return Err(FsError::Unsupported("ext bigalloc".into()));
    }
    let log_block = le_u32(raw, 24);
    if log_block > 6 {
        return corrupt("block size is out of range");
    }
    let block_size = 1024u64 << log_block;
    let is_64bit = incompat & INCOMPAT_64BIT != 0;
    let blocks_count = u64::from(le_u32(raw, 4))
        | if is_64bit {
            u64::from(le_u32(raw, 0x150)) << 32
        } else {
            0
        };
    let first_data_block = u64::from(le_u32(raw, 20));
    let blocks_per_group = u64::from(le_u32(raw, 32));
    let inodes_per_group = u64::from(le_u32(raw, 40));
    let rev_level = le_u32(raw, 76);
    let inode_size = if rev_level == 0 {
        128
    } else {
        u64::from(le_u16(raw, 88))
    };
    let desc_size = if is_64bit {
        u64::from(le_u16(raw, 254))
    } else {
        32
    };
    if blocks_per_group == 0 || blocks_per_group > block_size * 8 {
        return corrupt("blocks per group are out of range");
    }
    if first_data_block >= blocks_count || first_data_block > 1 {
        return corrupt("first data block is out of range");
    }
    if desc_size != 32 && desc_size != 64 {
        return corrupt("descriptor size is out of range");
    }
    if !(128..=block_size).contains(&inode_size) {
        return corrupt("inode size is out of range");
    }
    match blocks_count.checked_mul(block_size) {
        Some(bytes) if bytes <= partition_len => {}
        _ => {
            return Err(FsError::Corrupt(format!(
                "the volume's {blocks_count} blocks of {block_size} bytes exceed the partition's {partition_len} bytes"
            )))
        }
    }
    let kind = kind_of(raw);
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&raw[104..120]);
    Ok(Superblock {
        blocks_count,
        first_data_block,
        block_size,
        blocks_per_group,
        inodes_per_group,
        inode_size,
        desc_size,
        reserved_gdt_blocks: u64::from(le_u16(raw, 206)),
        sparse_super: ro_compat & RO_COMPAT_SPARSE_SUPER != 0,
        uninit_possible: ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0,
        kind,
        uuid,
        is_64bit,
        free_blocks: u64::from(le_u32(raw, 12))
            | if is_64bit {
                u64::from(le_u32(raw, 0x158)) << 32
            } else {
                0
            },
        free_inodes: u64::from(le_u32(raw, 16)),
    })
}

fn read_descriptors<S: ReadAt + ?Sized>(
    bytes: &PartitionBytes<'_, S>,
    sb: &Superblock,
    groups: u64,
) -> Result<Vec<Group>, FsError> {
    let table_len = groups * sb.desc_size;
    let mut table = vec![0u8; table_len as usize];
    bytes.read(&mut table, (sb.first_data_block + 1) * sb.block_size)?;
    let wide = sb.desc_size >= 64;
    let descriptors = table
        .chunks_exact(sb.desc_size as usize)
        .map(|d| {
            let hi = |at: usize| {
                if wide {
                    u64::from(le_u32(d, at)) << 32
                } else {
                    0
                }
            };
            let hi16 = |at: usize| {
                if wide {
                    u64::from(le_u16(d, at)) << 16
                } else {
                    0
                }
            };
            Group {
                block_bitmap: u64::from(le_u32(d, 0)) | hi(0x20),
                inode_bitmap: u64::from(le_u32(d, 4)) | hi(0x24),
                inode_table: u64::from(le_u32(d, 8)) | hi(0x28),
                itable_unused: u64::from(le_u16(d, 0x1c)) | hi16(0x32),
                free_blocks: u64::from(le_u16(d, 12)) | hi16(0x2c),
                free_inodes: u64::from(le_u16(d, 14)) | hi16(0x2e),
                flags: le_u16(d, 18),
            }
        })
        .collect();
    Ok(descriptors)
}

/// Every group's bitmaps and inode table must lie inside the volume, so the
/// block arithmetic on them cannot overflow and no read leaves the volume.
fn check_descriptors(sb: &Superblock, groups: &[Group]) -> Result<(), FsError> {
    let inode_table_blocks = inode_table_blocks(sb);
    for (g, group) in groups.iter().enumerate() {
        let inside = |what: &str, start: u64, len: u64| match start.checked_add(len) {
            Some(end) if end <= sb.blocks_count => Ok(()),
            _ => Err(FsError::Corrupt(format!(
                "group {g}'s {what} at block {start} lies beyond the volume's {} blocks",
                sb.blocks_count
            ))),
        };
        inside("block bitmap", group.block_bitmap, 1)?;
        inside("inode bitmap", group.inode_bitmap, 1)?;
        inside("inode table", group.inode_table, inode_table_blocks)?;
    }
    Ok(())
}

fn inode_table_blocks(sb: &Superblock) -> u64 {
    (sb.inodes_per_group * sb.inode_size).div_ceil(sb.block_size)
}

/// The block ranges that hold metadata in any group: superblock backups
/// with their descriptor and reserved blocks, bitmaps and inode tables.
/// Sorted and merged.
fn metadata_blocks(sb: &Superblock, groups: &[Group]) -> Vec<Range<u64>> {
    let groups_count = groups.len() as u64;
    let descriptor_blocks = (groups_count * sb.desc_size).div_ceil(sb.block_size);
    let inode_table_blocks = inode_table_blocks(sb);
    let mut ranges = Vec::with_capacity(groups.len() * 4);
    for (g, group) in groups.iter().enumerate() {
        let g = g as u64;
        if has_superblock(g, sb.sparse_super) {
            let first = sb.first_data_block + g * sb.blocks_per_group;
            ranges.push(first..first + 1 + descriptor_blocks + sb.reserved_gdt_blocks);
        }
        ranges.push(group.block_bitmap..group.block_bitmap + 1);
        ranges.push(group.inode_bitmap..group.inode_bitmap + 1);
        ranges.push(group.inode_table..group.inode_table + inode_table_blocks);
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// Group 0 and, with sparse_super, groups 1 and powers of 3, 5 and 7 carry
/// a superblock backup; without it, every group does.
fn has_superblock(group: u64, sparse_super: bool) -> bool {
    if !sparse_super || group <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut n = base;
        while n < group {
            n *= base;
        }
        n == group
    })
}

fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `ext_bitmaps` fuzz target: a 64-bit descriptor whose
    /// bitmap block is near 2^64 overflowed the metadata arithmetic of a
    /// `BLOCK_UNINIT` volume.
    #[test]
    fn a_descriptor_pointing_past_the_volume_is_refused() {
        let compressed = include_bytes!("fixtures/ext_descriptor_add_overflow.zst");
        let data = zstd::stream::decode_all(&compressed[..]).expect("fixture decompresses");
        let bytes = PartitionBytes {
            disk: &data,
            start: 0,
            len: data.len() as u64,
        };
        let err = free_space(&bytes, FreeRuns::new(0)).expect_err("the volume is refused");
        assert!(err.to_string().contains("lies beyond the volume"), "{err}");
    }

    #[test]
    fn free_inodes_are_counted_over_the_groups_inodes_only() {
        // 12 inodes: 0b1111_0111 then 0b0000_1001 (padding bits above 12 set
        // in the real bitmap must not count).
        assert_eq!(free_inode_bits(&[0b1111_0111, 0b1111_1001], 12), 12 - 9);
        assert_eq!(free_inode_bits(&[0xff, 0xff], 16), 0);
        assert_eq!(free_inode_bits(&[0, 0], 16), 16);
        // A descriptor claiming more inodes than the block holds is capped.
        assert_eq!(free_inode_bits(&[0], 64), 8);
    }

    #[test]
    fn superblock_backups_sit_in_groups_0_1_and_powers_of_3_5_7() {
        let with: Vec<u64> = (0..60).filter(|&g| has_superblock(g, true)).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49]);
        assert!(has_superblock(4, false));
    }
}
