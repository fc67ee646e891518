; topologies/figure4.json, routing switch MVS1 (the design's protocol stack 22), as in
; crates/dvipa-core/tests/fixtures/mvs1.profile with DISTMETHOD SERVERWLM (hash slots, so a
; packet arriving before its connection's CRT entry goes where its SYN went).
; DVA1 = 203.0.113.10, DVB1 = 203.0.113.20, XCFn = 10.0.0.n (the stack on MVSn).
VIPADYNAMIC
  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 203.0.113.10     ; DVA1
  VIPADISTRIBUTE DEFINE DISTMETHOD SERVERWLM 203.0.113.10 PORT 60
                 DESTIP 10.0.0.1, 10.0.0.2, 10.0.0.4           ; XCF1, XCF2, XCF4
  VIPABACKUP 30 203.0.113.20                                   ; DVB1
ENDVIPADYNAMIC
