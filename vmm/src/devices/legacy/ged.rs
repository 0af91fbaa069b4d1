//! The Generic Event Device's event register (ACPI 6.5 §5.6.9; the DSDT's `_EVT` reads
//! it). Reading returns the pending events and clears them.

use vmm_sys_util::eventfd::EventFd;

use crate::devices::bus::BusDevice;

pub struct Ged {
    pending: u32,
    irq: EventFd,
}

impl Ged {
    /// `irq` is the irqfd of the GED's interrupt line.
    pub fn new(irq: EventFd) -> Self {
        Ged { pending: 0, irq }
    }

    /// Latches `events` and raises the interrupt.
    pub fn raise(&mut self, events: u32) -> std::io::Result<()> {
        self.pending |= events;
        self.irq.write(1)
    }
}

impl crate::persist::Persist for Ged {
    /// The events latched and not yet read.
    type State = u32;

    fn save_state(&self) -> u32 {
        self.pending
    }

    fn restore_state(&mut self, pending: &u32) -> Result<(), crate::persist::DeviceStateError> {
        self.pending = *pending;
        // The guest had not read them: its interrupt is still due.
        if self.pending != 0 {
            let _ = self.irq.write(1);
        }
        Ok(())
    }
}

impl BusDevice for Ged {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 0 {
            let bytes = std::mem::take(&mut self.pending).to_le_bytes();
            let n = data.len().min(4);
            data[..n].copy_from_slice(&bytes[..n]);
        }
    }

    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_clears_and_irq_fires() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut ged = Ged::new(evt.try_clone().unwrap());
        ged.raise(1).unwrap();
        assert_eq!(evt.read().unwrap(), 1);
        let mut d = [0u8; 4];
        ged.read(0, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1);
        ged.read(0, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0);
        let mut big = [0xffu8; 8];
        ged.read(0, 0, &mut big); // oversized access: no panic, zero
        assert_eq!(big, [0; 8]);
    }

    #[test]
    fn pending_events_survive_a_save_with_their_interrupt() {
        use crate::persist::Persist;
        let mut ged = Ged::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        ged.raise(1).unwrap();
        let state = ged.save_state();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut restored = Ged::new(evt.try_clone().unwrap());
        restored.restore_state(&state).unwrap();
        assert_eq!(evt.read().unwrap(), 1, "the interrupt is raised again");
        let mut d = [0u8; 4];
        restored.read(0, 0, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1);
    }
}
