"""The labelwatch service shell: settings, Kafka loop, embedding, metrics and the CLI."""
