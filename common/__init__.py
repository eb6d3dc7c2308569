"""What every InsightX service needs, written once: settings, logging, errors, channels, servers, stores."""
