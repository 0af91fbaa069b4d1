//! ACPI hardware-reduced sleep control/status registers (ACPI 6.5 §4.8.3.7) and the PIIX
//! reset control register at 0xCF9, which the FADT also names as the reset register.

use crate::arch::x86_64::layout::{RESET_CONTROL_PORT, S5_SLEEP_TYPE, SLEEP_CONTROL_PORT};
use crate::devices::bus::BusDevice;
use crate::devices::{PowerRequest, PowerSink};

const SLP_EN: u8 = 1 << 5;
const SLP_TYP_SHIFT: u8 = 2;
const SLP_TYP_MASK: u8 = 0x7;
/// Reset control register bits: RST_CPU starts the reset, SYS_RST makes it a hard one.
const RST_CPU: u8 = 1 << 2;
const CF9_WRITABLE: u8 = 0x0e;

pub struct AcpiPm {
    power: PowerSink,
    reset_control: u8,
}

impl AcpiPm {
    pub fn new(power: PowerSink) -> Self {
        AcpiPm { power, reset_control: 0 }
    }
}

impl crate::persist::Persist for AcpiPm {
    /// The reset control register (0xCF9).
    type State = u8;

    fn save_state(&self) -> u8 {
        self.reset_control
    }

    fn restore_state(&mut self, value: &u8) -> Result<(), crate::persist::DeviceStateError> {
        // Only its writable bits, and never RST_CPU (which a reset clears as it starts):
        // a restore starts no reset, and the guest's next write of it does.
        self.reset_control = value & CF9_WRITABLE & !RST_CPU;
        Ok(())
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let value = if base + offset == u64::from(RESET_CONTROL_PORT) {
            self.reset_control
        } else {
            0 // sleep status: never asleep, WAK_STS clear
        };
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match (base + offset) as u16 {
            SLEEP_CONTROL_PORT => {
                let sleep_type = (value >> SLP_TYP_SHIFT) & SLP_TYP_MASK;
                if value & SLP_EN != 0 {
                    if sleep_type == S5_SLEEP_TYPE {
                        (self.power)(PowerRequest::PowerOff);
                    } else {
                        log::info!(
                            "guest asked for sleep type {sleep_type}, which Vessel does not offer"
                        );
                    }
                }
            }
            RESET_CONTROL_PORT => {
                // The reset happens on the 0→1 edge of RST_CPU (PIIX4 datasheet §4.1.17).
                let rising = value & RST_CPU != 0 && self.reset_control & RST_CPU == 0;
                self.reset_control = value & CF9_WRITABLE;
                if rising {
                    self.reset_control = 0;
                    (self.power)(PowerRequest::Reset);
                }
            }
            _ => {} // sleep status: write-one-to-clear bits that are never set
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::SLEEP_STATUS_PORT;
    use std::sync::{Arc, Mutex};

    fn pm() -> (AcpiPm, Arc<Mutex<Vec<PowerRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (AcpiPm::new(Arc::new(move |r| sink.lock().unwrap().push(r))), seen)
    }

    #[test]
    fn s5_powers_off_other_states_do_not() {
        let (mut pm, seen) = pm();
        let port = u64::from(SLEEP_CONTROL_PORT);
        pm.write(port, 0, &[(3 << 2) | SLP_EN]); // S3: not offered
        pm.write(port, 0, &[5 << 2]); // S5 without SLP_EN
        assert!(seen.lock().unwrap().is_empty());
        pm.write(port, 0, &[(5 << 2) | SLP_EN]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::PowerOff]);
        let mut b = [0xffu8];
        pm.read(u64::from(SLEEP_STATUS_PORT), 0, &mut b);
        assert_eq!(b[0], 0);
    }

    #[test]
    fn cf9_resets_on_rising_edge() {
        let (mut pm, seen) = pm();
        let port = u64::from(RESET_CONTROL_PORT);
        pm.write(port, 0, &[0x02]); // SYS_RST only: arms a hard reset
        let mut b = [0u8];
        pm.read(port, 0, &mut b);
        assert_eq!(b[0], 0x02);
        assert!(seen.lock().unwrap().is_empty());
        pm.write(port, 0, &[0x06]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset]);
        pm.write(port, 0, &[]); // empty access: ignored
    }

    #[test]
    fn an_armed_reset_survives_a_save_and_a_restore_starts_none() {
        use crate::persist::Persist;
        let (mut pm, _) = pm();
        let port = u64::from(RESET_CONTROL_PORT);
        pm.write(port, 0, &[0x02]);
        let (mut restored, seen) = self::pm();
        restored.restore_state(&0xff).unwrap(); // RST_CPU set in a crafted state
        assert!(seen.lock().unwrap().is_empty(), "no reset from a restore");
        restored.restore_state(&pm.save_state()).unwrap();
        let mut b = [0u8];
        restored.read(port, 0, &mut b);
        assert_eq!(b[0], 0x02);
        restored.write(port, 0, &[0x06]);
        assert_eq!(*seen.lock().unwrap(), vec![PowerRequest::Reset]);
    }
}
