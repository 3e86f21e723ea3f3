"""The fault-injection suite (issue 7): kill -9, full disks, servers stopped, hostile input."""
