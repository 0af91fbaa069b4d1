//! The VM process's footprint once its VM runs: the code and read-only data it used only
//! to start (parsing the configuration, building the sandbox and the machine, loading
//! firmware) stay mapped and counted in its resident memory until something unmaps them.
//! Once the guest runs, the process lets go of them, as a kernel frees its init sections
//! after boot: the pages stay in the page cache (shared with every other process that
//! maps the same files), and those the VM goes on using come back on their first use.
//! Freed heap at the ends of malloc's chunks goes back too.

/// A mapping of this process that holds only pages of its file: code or read-only data
/// none of whose pages were ever copied (written to), so dropping them loses nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct FilePages {
    pub start: usize,
    pub end: usize,
}

/// The mappings of `smaps` (the text of `/proc/self/smaps`) that hold resident pages of
/// a file and nothing else: not writable, with no anonymous (copied) pages. The relocated
/// read-only data (RELRO) is left alone: its pages are copies the loader wrote.
pub fn file_pages(smaps: &str) -> Vec<FilePages> {
    let mut found = Vec::new();
    // The mapping being read: its range, whether it qualifies so far, its resident and
    // anonymous sizes once their lines are read.
    let mut current: Option<(FilePages, bool, Option<u64>, Option<u64>)> = None;
    let mut finish = |mapping: Option<(FilePages, bool, Option<u64>, Option<u64>)>| {
        if let Some((pages, true, Some(rss), Some(0))) = mapping
            && rss > 0
        {
            found.push(pages);
        }
    };
    for line in smaps.lines() {
        if let Some((range, rest)) = header(line) {
            finish(current.take());
            let mut fields = rest.split_whitespace();
            let perms = fields.next().unwrap_or("");
            // offset, device, inode, then the path.
            let inode = fields.nth(2).unwrap_or("0");
            let path = fields.next().unwrap_or("");
            let qualifies = perms.len() == 4
                && perms.as_bytes()[1] == b'-'
                && perms.as_bytes()[3] == b'p'
                && inode != "0"
                && path.starts_with('/');
            current = Some((range, qualifies, None, None));
            continue;
        }
        let Some((_, _, rss, anonymous)) = current.as_mut() else { continue };
        let kib = |value: &str| value.trim().strip_suffix("kB")?.trim().parse::<u64>().ok();
        if let Some(value) = line.strip_prefix("Rss:") {
            *rss = kib(value);
        } else if let Some(value) = line.strip_prefix("Anonymous:") {
            *anonymous = kib(value);
        }
    }
    finish(current.take());
    found
}

/// `START-END REST` of a mapping's first line in smaps, or None for a field's line.
fn header(line: &str) -> Option<(FilePages, &str)> {
    let (range, rest) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (start < end).then_some((FilePages { start, end }, rest))
}

/// Lets go of the start-up's pages: unmaps the resident pages of code and read-only data
/// (they come back from the page cache when next used) and returns freed heap to the
/// system. Returns how many bytes of mappings it released, for the log.
pub fn let_go_of_start_up_pages() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else { return 0 };
    let mut released = 0;
    for pages in file_pages(&smaps) {
        let len = pages.end - pages.start;
        // SAFETY: the range is one whole mapping of this process that maps a file
        // privately, read-only, with no page copied: dropping its pages changes nothing
        // its readers see (a later access maps the file's page again). No thread unmaps
        // or remaps the files' mappings meanwhile (the loader is done; nothing dlopens).
        if unsafe { libc::madvise(pages.start as *mut libc::c_void, len, libc::MADV_DONTNEED) } == 0
        {
            released += len;
        }
    }
    // SAFETY: malloc_trim only returns free heap memory; it takes malloc's own lock.
    unsafe { libc::malloc_trim(0) };
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0300000 r-xp 00010000 fe:01 1234                       /usr/bin/vessel-vm
Rss:                2284 kB
Anonymous:             0 kB
55d0c0300000-55d0c0350000 r--p 00310000 fe:01 1234                       /usr/bin/vessel-vm
Rss:                 316 kB
Anonymous:           316 kB
55d0c0350000-55d0c0352000 rw-p 00360000 fe:01 1234                       /usr/bin/vessel-vm
Rss:                   8 kB
Anonymous:             8 kB
55d0c0400000-55d0c0600000 r--p 00000000 fe:01 1234                       /usr/bin/vessel-vm
Rss:                 448 kB
Anonymous:             0 kB
55d0c0600000-55d0c0700000 r--p 00000000 fe:01 99                         /usr/lib/cold.so
Rss:                   0 kB
Anonymous:             0 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0                          [heap]
Rss:                 536 kB
Anonymous:           536 kB
7f0000000000-7f0000010000 rw-s 00000000 00:01 77                         /memfd:frame (deleted)
Rss:                  64 kB
Anonymous:             0 kB
7f0000010000-7f0000020000 r--s 00000000 00:01 78                         /memfd:frame (deleted)
Rss:                  64 kB
Anonymous:             0 kB
7f0000020000-7f0000040000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   4 kB
Anonymous:             0 kB
7f0000040000-7f0000050000 r-xp 00000000 fe:01 55                         /usr/lib/libc.so.6
Rss:                 852 kB
";

    #[test]
    fn only_private_read_only_file_mappings_with_no_copied_page_are_released() {
        let found = file_pages(SMAPS);
        assert_eq!(
            found,
            vec![
                // The code and the read-only data, not the relocated data (copied pages),
                // the writable data, a mapping with nothing resident, the heap, shared
                // memory, the vDSO, nor a mapping whose anonymous count is not known.
                FilePages { start: 0x55d0c0000000, end: 0x55d0c0300000 },
                FilePages { start: 0x55d0c0400000, end: 0x55d0c0600000 },
            ]
        );
        assert!(file_pages("").is_empty());
        assert!(file_pages("garbage\nRss: 4 kB\nAnonymous: 0 kB\n").is_empty());
    }

    #[test]
    fn released_code_runs_on_and_read_only_data_reads_the_same() {
        // This test's own process: its code and read-only data, dropped, come back.
        static TABLE: [u64; 4096] = {
            let mut t = [0u64; 4096];
            let mut i = 0;
            while i < t.len() {
                t[i] = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                i += 1;
            }
            t
        };
        let before: u64 = std::hint::black_box(&TABLE).iter().fold(0, |a, &v| a ^ v);
        assert!(let_go_of_start_up_pages() > 0, "nothing released");
        let after: u64 = std::hint::black_box(&TABLE).iter().fold(0, |a, &v| a ^ v);
        assert_eq!(before, after);
    }
}
