"""Jobs: submission, chunking, routing to device queues, progress, cancel, priorities; the job CLI."""
