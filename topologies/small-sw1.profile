; topologies/small.json, routing switch sw1: owns DVIPA 10.78.200.1, port 8080, all stacks.
; SERVERWLM: slots by hash, so a packet that arrives before its connection's CRT entry (the
; handshake's ACK) goes where its SYN went.
VIPADYNAMIC
  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.255 10.78.200.1
  VIPADISTRIBUTE DEFINE DISTMETHOD SERVERWLM 10.78.200.1 PORT 8080 DESTIP ALL
ENDVIPADYNAMIC
