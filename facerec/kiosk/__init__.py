"""Door-access kiosk: a camera loop that decides per visit (a tracked face over several good frames), never
per frame, and drives a door through commands, HTTP or MQTT. A front end over `facerec.api` (see README,
"Door-access kiosk")."""
