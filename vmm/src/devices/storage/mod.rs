//! Storage: disk image access shared by the disk controllers (virtio-blk now), image
//! locks, and the CD-ROM command set (MMC) that the CD drive's transports carry.

pub mod ide;
pub mod image;
pub mod lock;
pub mod mmc;
