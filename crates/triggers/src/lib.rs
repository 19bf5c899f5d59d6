pub mod schedules;
