; Routing switch MVS5 of the design's figure 4 (protocol stack 38).
; Written with the minimum abbreviations, in mixed case, on purpose.
VipaDyn
  VipaDef Move Immed 255.255.255.0 203.0.113.20                ; DVB1
  VipaDist 203.0.113.20 Port 60 DestIp All
  VipaB 10 203.0.113.10                                        ; backs up DVA1
  VipaDist 203.0.113.10 Port 60 DestIp 10.0.0.2 10.0.0.3       ; its own list for DVA1:
           10.0.0.4                                            ; XCF2, XCF3, XCF4
EndVipaDyn
