//! Storage: disk image access shared by the disk controllers (virtio-blk now).

pub mod image;
