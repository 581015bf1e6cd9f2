"""The web portal: a REST API under ``/api/v1`` and live pages (market, account,
registry), served by ``carbonx serve --web PORT`` and ``carbonx demo --web PORT`` from
the gateway's own process, reading the exchange's own state."""
