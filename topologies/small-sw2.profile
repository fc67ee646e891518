; topologies/small.json, routing switch sw2: ranked backup of DVIPA 10.78.200.1.
VIPADYNAMIC
  VIPABACKUP 100 10.78.200.1
ENDVIPADYNAMIC
